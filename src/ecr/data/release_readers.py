"""Readers of the released datasets' own layouts (docs/method.md §6): DFEW, MAFW and EMER.

Each knows one release's files and nothing else; rows go through the shared plumbing of
`ecr.data.manifest_fields`, so every bad row is a `ManifestError` naming `file:line` (raised, or collected
in `errors`, as `ecr.data.manifests` describes).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from ecr.data.manifest_fields import canonical_label, find_clip, record_error
from ecr.data.types import ClipRecord
from ecr.errors import ManifestError, reading_text
from ecr.extras import require
from ecr.labels import DFEW, MAFW, LabelSet, get_label_set


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
                video = find_clip(root, ["clip", "clips"], stems, where)
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
                video = find_clip(root, ["clips", "clip"], [name], where)
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
                video = find_clip(root_p, ["", "video", "videos"], [Path(name).stem], where)
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
