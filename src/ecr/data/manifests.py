"""Manifest readers: DFEW, MAFW, EMER and the custom JSONL/CSV format, all returning `list[ClipRecord]`.

Each reader knows one dataset's release layout (docs/method.md §6) and nothing else: it resolves clip paths under the
dataset root, normalises labels through the active `LabelSet`, and turns every bad row into a
`ManifestError` naming `file:line`. Readers never touch the media (that is `decode_clip`'s job), so reading a
manifest is fast and happens in `ClipDataModule.setup()`.

Every reader takes `errors`: with `None` the first bad row raises; with a list, bad rows are appended to it
and skipped, which is how `ecr data check` reports all problems of a manifest at once.

Custom (and text) manifests are read with `ecr.rows.iter_rows` (JSONL/CSV/TSV by suffix). The public helpers
`record_error`, `canonical_label`, `normalize_split` and `pick_field` are shared with `ecr.data.text`.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from ecr.data.types import ClipRecord
from ecr.errors import ConfigError, LabelError, ManifestError, reading_text
from ecr.extras import require
from ecr.labels import DFEW, MAFW, LabelSet, get_label_set
from ecr.rows import BadRow, iter_rows

Split = Literal["train", "val", "test"]
SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
VIDEO_EXTS: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".webm", ".mov")


# ------------------------------------------------------------------------------------------------ helpers
def record_error(err: ManifestError, errors: list[ManifestError] | None) -> None:
    """Raise `err` (`errors` is None: the first bad row stops the reader) or append it to `errors` and go on.

    Every reader's `errors` argument goes through this, so `ecr data check` can report all bad rows at once.
    """
    if errors is None:
        raise err
    errors.append(err)


def resolve_under_root(root: Path, rel: str, where: str) -> Path:
    """`root / rel`, normalised; a path escaping `root` is an error: via `..`, an outside absolute path, or a
    symlink inside the root that points outside it (checked on the resolved paths; the root itself may be a link).
    """
    if not rel or not str(rel).strip():
        raise ManifestError(f"{where}: empty path")
    root_n = Path(os.path.normpath(os.path.abspath(root)))
    full = Path(os.path.normpath(root_n / Path(rel).expanduser()))
    if not _inside(full, root_n):
        raise ManifestError(f"{where}: path {rel!r} escapes the dataset root {str(root_n)!r}")
    real, real_root = full.resolve(), root_n.resolve()
    if not _inside(real, real_root):
        raise ManifestError(
            f"{where}: path {rel!r} is a symlink to {str(real)!r}, outside the dataset root {str(real_root)!r}"
        )
    return full


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def canonical_label(label_set: LabelSet, text: str, where: str) -> str:
    """`text` normalised to a label of `label_set` (synonyms allowed).

    Raises:
        ManifestError: `"{where}: unknown label ..."`, listing the label set (a manifest row's error, not a
            `LabelError`, so readers collect it like any other bad row).
    """
    try:
        return label_set.canonical(text, where=where)
    except LabelError as err:
        raise ManifestError(
            f"{where}: unknown label {text!r}; the label set {label_set.name!r} is {list(label_set.labels)}"
        ) from err


def _find_clip(root: Path, subdirs: Sequence[str], stems: Sequence[str], where: str) -> Path:
    """First existing `root/sub/stem.ext`; else the first candidate (so the decoder reports it missing)."""
    candidates = [
        resolve_under_root(root, os.path.join(sub, stem + ext) if sub else stem + ext, where)
        for sub in subdirs
        for stem in stems
        for ext in VIDEO_EXTS
    ]
    return next((c for c in candidates if c.is_file()), candidates[0])


def _opt_float(value: Any, field_name: str, where: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise ManifestError(f"{where}: field {field_name!r} must be a number of seconds, got {value!r}") from err


def normalize_split(value: Any, where: str) -> str | None:
    """The split of a cell: "train", "val" or "test" (aliases such as "dev", "validation" accepted); None if empty.

    Raises:
        ManifestError: `"{where}: unknown split ..."` for any other value.
    """
    if value is None or not str(value).strip():
        return None
    key = str(value).strip().lower()
    if key not in SPLIT_ALIASES:
        raise ManifestError(f"{where}: unknown split {value!r}; expected one of train/val/test")
    return SPLIT_ALIASES[key]


# ------------------------------------------------------------------------------------------------- custom
_FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "video": ("video", "video_path", "path", "file"),
    "audio": ("audio", "audio_path"),
    "label": ("label", "emotion", "emotions"),
    "explanation": ("explanation", "reason", "reasons", "rationale"),
    "start": ("start", "start_s", "start_time"),
    "end": ("end", "end_s", "end_time"),
    "split": ("split",),
    "id": ("id", "name", "names"),
}


def pick_field(row: dict[str, Any], key: str) -> Any:
    """The first non-empty value of manifest field `key` under any of its aliases, or None.

    Aliases are `_FIELD_ALIASES[key]` (e.g. "label": label, emotion, emotions); rows come from
    `ecr.rows.iter_rows`, whose CSV keys are already lower-cased.
    """
    for alias in _FIELD_ALIASES[key]:
        if alias in row and row[alias] not in (None, ""):
            return row[alias]
    return None


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
    known = {a for aliases in _FIELD_ALIASES.values() for a in aliases}
    records: list[ClipRecord] = []
    for lineno, row in iter_rows(manifest):
        where = f"{manifest}:{lineno}"
        try:
            if isinstance(row, BadRow):
                raise ManifestError(f"{where}: {row.reason}")
            video_rel, label_text = pick_field(row, "video"), pick_field(row, "label")
            if video_rel is None:
                raise ManifestError(f"{where}: missing the video path (column 'video')")
            if label_text is None:
                raise ManifestError(f"{where}: missing the label (column 'label')")
            video = resolve_under_root(root_p, str(video_rel), where)
            audio_rel = pick_field(row, "audio")
            audio = resolve_under_root(root_p, str(audio_rel), where) if audio_rel is not None else None
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
            records.append(
                ClipRecord(
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
            )
        except ManifestError as err:
            record_error(err, errors)
    return records


# --------------------------------------------------------------------------------------------------- DFEW
def read_dfew(
    root: str | Path,
    fold: int = 1,
    split: Literal["train", "test"] = "train",
    labels: str | Sequence[str] | LabelSet = DFEW,
    *,
    errors: list[ManifestError] | None = None,
) -> list[ClipRecord]:
    """DFEW fold `fold` (1..5): `label/single_{split}set_{fold}.csv` (video id, label id 1..7; the header row is
    recognised by its label cell, so a file without one keeps its first row).

    Clips are looked up as `clip/{id}.mp4` (also .avi and 5-digit zero-padded ids).
    """
    root = Path(root)
    label_set = get_label_set(labels)
    csv_path = root / "label" / f"single_{split}set_{fold}.csv"
    if not csv_path.is_file():
        raise ManifestError(f"{csv_path}: DFEW label file not found (fold {fold}, split {split!r})")
    records = []
    with reading_text(csv_path), csv_path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        first = True
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            if not row or not "".join(row).strip():
                continue
            if first:  # the header (a label cell that is not an id); a header-less file's first row is data
                first = False
                if len(row) >= 2 and not row[1].strip().isdigit():
                    continue
            try:
                if len(row) < 2:
                    raise ManifestError(f"{where}: expected 'video id, label id', got {row}")
                vid, lab = row[0].strip(), row[1].strip()
                if not lab.isdigit() or not 1 <= int(lab) <= len(DFEW.labels):
                    raise ManifestError(f"{where}: unknown label id {lab!r}; DFEW ids are 1..7 = {list(DFEW.labels)}")
                stems = [vid] + ([f"{int(vid):05d}"] if vid.isdigit() else [])
                video = _find_clip(root, ["clip", "clips"], stems, where)
                label = canonical_label(label_set, DFEW.labels[int(lab) - 1], where)
                records.append(ClipRecord(id=vid, video=video, label=label, split=split, source=where))
            except ManifestError as err:
                record_error(err, errors)
    return records


# --------------------------------------------------------------------------------------------------- MAFW
def _mafw_label_rows(path: Path, label_column: int, what: str) -> Iterator[tuple[int, str, str]]:
    """(row number, clip name without extension, label cell as text) of a MAFW label workbook's data rows."""
    openpyxl = require("openpyxl", f"the MAFW {what} workbook {path}")
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as err:  # openpyxl raises several unrelated types for a broken file
        raise ManifestError(f"{path}: cannot read the MAFW {what} workbook: {err}") from err
    try:
        for r, row in enumerate(book.worksheets[0].iter_rows(values_only=True), 1):
            if row is None or len(row) <= label_column or row[0] is None or row[label_column] is None:
                continue
            yield r, Path(str(row[0]).strip()).stem, str(row[label_column]).strip()
    finally:
        book.close()


def _mafw_label_id(cell: str, where: str) -> str:
    lab = int(cell)
    if not 1 <= lab <= len(MAFW.labels):
        raise ManifestError(f"{where}: label id {cell!r} outside 1..11 {list(MAFW.labels)}")
    return MAFW.labels[lab - 1]


def read_mafw_xlsx(path: str | Path, label_column: int = 12) -> dict[str, str]:
    """Clip name -> MAFW label name from `Labels/single-set.xlsx` (column 0 name, `label_column` id 1..11).

    Header/title rows (anything whose label cell is not an integer id) are skipped, so the number of header
    rows does not matter. Names are stored without extension.
    """
    path = Path(path)
    out: dict[str, str] = {}
    for r, name, cell in _mafw_label_rows(path, label_column, "label"):
        if cell.isdigit():  # else a header row
            out[name] = _mafw_label_id(cell, f"{path}:{r}")
    return out


def read_mafw_multi_xlsx(path: str | Path, label_column: int = 12) -> dict[str, list[str]]:
    """Clip name -> every MAFW label of the clip, from `Labels/multi-set.xlsx` (compound set: comma-separated ids
    1..11 in `label_column`, e.g. "1,5"). Header rows (no integer ids) are skipped; an id outside 1..11 is an error
    naming the row. The evaluation counts a prediction as compound-correct when it is any of these labels."""
    path = Path(path)
    out: dict[str, list[str]] = {}
    for r, name, cell in _mafw_label_rows(path, label_column, "multi-label"):
        ids = [x.strip() for x in re.split(r"[,;，\s]+", cell) if x.strip()]
        if ids and all(x.isdigit() for x in ids):
            out[name] = list(dict.fromkeys(_mafw_label_id(x, f"{path}:{r}") for x in ids))
    return out


def read_mafw(
    root: str | Path,
    fold: int = 1,
    split: Literal["train", "test"] = "train",
    labels: str | Sequence[str] | LabelSet = MAFW,
    *,
    errors: list[ManifestError] | None = None,
) -> list[ClipRecord]:
    """MAFW single-label fold `fold` (1..5): `Train & Test Set/single/no_caption/set_{fold}/{split}.txt`.

    Lines are `<name>.mp4 <label name>`; a line with only a name takes its label from
    `Labels/single-set.xlsx`.
    When both give a label they must agree. Clips are `clips/{name}.mp4`. With `Labels/multi-set.xlsx` present,
    a clip listed there carries all its labels in `meta["labels"]` (MAFW's compound truth; docs/method.md §5).
    """
    root = Path(root)
    label_set = get_label_set(labels)
    txt = root / "Train & Test Set" / "single" / "no_caption" / f"set_{fold}" / f"{split}.txt"
    if not txt.is_file():
        raise ManifestError(f"{txt}: MAFW split file not found (fold {fold}, split {split!r})")
    xlsx = root / "Labels" / "single-set.xlsx"
    table = read_mafw_xlsx(xlsx) if xlsx.is_file() else None
    multi_xlsx = root / "Labels" / "multi-set.xlsx"
    multi = read_mafw_multi_xlsx(multi_xlsx) if multi_xlsx.is_file() else {}
    records = []
    with reading_text(txt):
        for lineno, line in enumerate(txt.read_text(encoding="utf-8-sig").splitlines(), 1):
            where = f"{txt}:{lineno}"
            parts = line.split()
            if not parts:
                continue
            try:
                name = Path(parts[0]).stem
                text_label = " ".join(parts[1:]) or None
                xlsx_label = table.get(name) if table is not None else None
                if text_label is None and xlsx_label is None:
                    raise ManifestError(
                        f"{where}: no label for {name!r} (not on the line"
                        + (f", not in {xlsx})" if table is not None else f", and {xlsx} does not exist)")
                    )
                if text_label is not None and xlsx_label is not None and MAFW.normalize(text_label) != xlsx_label:
                    raise ManifestError(f"{where}: label {text_label!r} disagrees with {xlsx} ({xlsx_label!r})")
                label = canonical_label(label_set, text_label or str(xlsx_label), where)
                video = _find_clip(root, ["clips", "clip"], [name], where)
                meta = {"labels": [canonical_label(label_set, x, where) for x in multi[name]]} if name in multi else {}
                records.append(ClipRecord(id=name, video=video, label=label, split=split, source=where, meta=meta))
            except ManifestError as err:
                record_error(err, errors)
    return records


# --------------------------------------------------------------------------------------------------- EMER
def read_emer(
    manifest: str | Path,
    root: str | Path | None = None,
    labels: str | Sequence[str] | LabelSet = MAFW,
    *,
    errors: list[ManifestError] | None = None,
) -> list[ClipRecord]:
    """EMER CSV with columns `names, emotions, subtitles, reasons`; clips `{root}/{name}.avi` (or video/).

    The reasons become `explanation` (the SFT targets); subtitles are kept in `meta`.
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: EMER CSV does not exist")
    root_p = Path(root) if root is not None else manifest.parent
    label_set = get_label_set(labels)
    records = []
    with reading_text(manifest), manifest.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        cols = {c.strip().lower() for c in reader.fieldnames or []}
        missing = {"names", "emotions"} - cols
        if missing:
            raise ManifestError(f"{manifest}:1: EMER CSV lacks columns {sorted(missing)} (has {sorted(cols)})")
        for row in reader:
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k is not None}
            where = f"{manifest}:{reader.line_num}"
            try:
                name = row["names"]
                if not name:
                    raise ManifestError(f"{where}: empty clip name")
                video = _find_clip(root_p, ["", "video", "videos"], [Path(name).stem], where)
                records.append(
                    ClipRecord(
                        id=Path(name).stem,
                        video=video,
                        label=canonical_label(label_set, row["emotions"], where),
                        explanation=row.get("reasons") or None,
                        source=where,
                        meta={"subtitles": row["subtitles"]} if row.get("subtitles") else {},
                    )
                )
            except ManifestError as err:
                record_error(err, errors)
    return records


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
        records = [r for split in ("train", "test") for r in reader(root, fold, split, lset, errors=errors)]  # type: ignore[arg-type]
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
