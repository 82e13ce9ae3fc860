"""Manifest readers: DFEW, MAFW, EMER and the custom JSONL/CSV format, all returning `list[ClipRecord]`.

Each reader knows one dataset's release layout (docs/method.md §6) and nothing else: it resolves clip paths under the
dataset root, normalises labels through the active `LabelSet`, and turns every bad row into a
`ManifestError` naming `file:line`. Readers never touch the media (that is `decode_clip`'s job), so reading a
manifest is fast and happens in `ClipDataModule.setup()`.

Every reader takes `errors`: with `None` the first bad row raises; with a list, bad rows are appended to it
and skipped, which is how `ecr data check` reports all problems of a manifest at once.

Custom (and text) manifests are read with `ecr.rows.iter_rows` (JSONL/CSV/TSV by suffix). The public helpers
`record_error`, `canonical_label`, `normalize_split` and `pick_field` (`ecr.data.manifest_fields`) are shared with
`ecr.data.text`; the DFEW, MAFW and EMER readers are `ecr.data.release_readers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ecr.data.manifest_fields import (
    FIELD_ALIASES,
    SPLIT_ALIASES,
    VIDEO_EXTS,
    Split,
    canonical_label,
    normalize_split,
    pick_field,
    record_error,
    resolve_under_root,
)
from ecr.data.release_readers import read_dfew, read_emer, read_mafw, read_mafw_multi_xlsx, read_mafw_xlsx
from ecr.data.types import ClipRecord
from ecr.errors import ConfigError, ManifestError
from ecr.labels import DFEW, MAFW, LabelSet, get_label_set
from ecr.rows import BadRow, iter_rows

__all__ = [
    "SPLIT_ALIASES",
    "VIDEO_EXTS",
    "DatasetFormat",
    "Split",
    "canonical_label",
    "drop_duplicate_ids",
    "normalize_split",
    "pick_field",
    "read_custom_manifest",
    "read_dataset",
    "read_dfew",
    "read_emer",
    "read_mafw",
    "read_mafw_multi_xlsx",
    "read_mafw_xlsx",
    "record_error",
    "resolve_under_root",
]


def _opt_float(value: Any, field_name: str, where: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise ManifestError(f"{where}: field {field_name!r} must be a number of seconds, got {value!r}") from err


def read_custom_manifest(
    manifest: str | Path,
    root: str | Path | None = None,
    labels: str | Sequence[str] | LabelSet = "dfew",
    *,
    errors: list[ManifestError] | None = None,
) -> list[ClipRecord]:
    """Read a custom JSONL/CSV manifest (docs/method.md §6); paths are relative to `root` (default: its folder).

    Columns: `video` (required), `label` (required), optional `audio`, `start`, `end` (seconds),
    `explanation`, `split` (train/val/test), `id`. Other columns are kept in `ClipRecord.meta`.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: manifest file does not exist")
    root_p = Path(root) if root is not None else manifest.parent
    label_set = get_label_set(labels)
    known = {a for aliases in FIELD_ALIASES.values() for a in aliases}
    records: list[ClipRecord] = []
    for lineno, row in iter_rows(manifest):
        where = f"{manifest}:{lineno}"
        try:
            if isinstance(row, BadRow):
                raise ManifestError(f"{where}: {row.reason}")
            records.append(_custom_record(row, root_p, label_set, known, where))
        except ManifestError as err:
            record_error(err, errors)
    return records


def _custom_record(row: dict[str, Any], root: Path, label_set: LabelSet, known: set[str], where: str) -> ClipRecord:
    """One custom-manifest row as a `ClipRecord`; a `ManifestError` naming `where` for the first bad cell."""
    video_rel, label_text = pick_field(row, "video"), pick_field(row, "label")
    if video_rel is None:
        raise ManifestError(f"{where}: missing the video path (column 'video')")
    if label_text is None:
        raise ManifestError(f"{where}: missing the label (column 'label')")
    video = resolve_under_root(root, str(video_rel), where)
    audio_rel = pick_field(row, "audio")
    audio = resolve_under_root(root, str(audio_rel), where) if audio_rel is not None else None
    start, end = (
        _opt_float(pick_field(row, "start"), "start", where),
        _opt_float(pick_field(row, "end"), "end", where),
    )
    if start is not None and start < 0:
        raise ManifestError(f"{where}: start must be >= 0, got {start}")
    if start is not None and end is not None and end <= start:
        raise ManifestError(f"{where}: end ({end}) must be greater than start ({start})")
    rid = pick_field(row, "id")
    if rid is None:
        rid = Path(str(video_rel)).stem + (f"@{start or 0:g}-{end:g}" if end is not None else "")
    expl = pick_field(row, "explanation")
    return ClipRecord(
        id=str(rid),
        video=video,
        label=canonical_label(label_set, str(label_text), where),
        audio=audio,
        start=start,
        end=end,
        explanation=None if expl is None else str(expl),
        split=normalize_split(pick_field(row, "split"), where),
        source=where,
        meta={k: v for k, v in row.items() if k not in known},
    )


# ------------------------------------------------------------------------------------------------- any
DatasetFormat = Literal["custom", "dfew", "mafw", "emer"]


def read_dataset(
    format: DatasetFormat,
    root: str | Path,
    manifest: str | Path | None = None,
    labels: str | Sequence[str] | LabelSet | None = None,
    fold: int = 1,
    *,
    errors: list[ManifestError] | None = None,
) -> list[ClipRecord]:
    """All records of a dataset in one of the supported formats (DFEW/MAFW: train + test of `fold`).

    `manifest` is required for "custom" and "emer" (relative paths are taken relative to `root` when they
    do not exist as given). `labels` defaults to the dataset's own set (DFEW/MAFW) or "dfew".
    """
    root = Path(root)
    if not root.is_dir():  # found here, at DataModule setup, before any model weights load
        raise ConfigError(f"data.root: {root} is not a directory (the dataset root every clip path is relative to)")
    if format in ("dfew", "mafw"):
        reader = read_dfew if format == "dfew" else read_mafw
        lset = labels if labels is not None else (DFEW if format == "dfew" else MAFW)
        records = [r for split in ("train", "test") for r in reader(root, fold, split, lset, errors=errors)]
        return drop_duplicate_ids(records, errors)
    if format not in ("custom", "emer"):
        raise ManifestError(f"unknown dataset format {format!r}; expected custom, dfew, mafw or emer")
    if manifest is None:
        raise ManifestError(f"format {format!r} needs a manifest file (data.manifest)")
    mpath = Path(manifest)
    if not mpath.is_absolute() and not mpath.exists() and (root / mpath).exists():
        mpath = root / mpath
    if format == "emer":
        records = read_emer(mpath, root, labels if labels is not None else MAFW, errors=errors)
    else:
        records = read_custom_manifest(mpath, root, labels if labels is not None else "dfew", errors=errors)
    return drop_duplicate_ids(records, errors)


def drop_duplicate_ids(records: list[ClipRecord], errors: list[ManifestError] | None) -> list[ClipRecord]:
    """Records with their first id only; a repeated id is a `ManifestError` naming both rows (`record_error`).

    A repeated id is the same sample twice (or two samples one cache entry, split and report row apart).
    """
    first: dict[str, str] = {}
    kept: list[ClipRecord] = []
    for rec in records:
        if rec.id in first:
            record_error(
                ManifestError(f"{rec.source}: duplicate clip id {rec.id!r} (first at {first[rec.id]})"), errors
            )
            continue
        first[rec.id] = rec.source
        kept.append(rec)
    return kept
