"""The one JSONL/CSV row reader: manifests, labelled-sentence sets, `ecr label` inputs, predictions.

Format by suffix (case-insensitive): `.jsonl`, `.json`, `.ndjson` are JSON Lines (one object per line); `.tsv`
is tab-separated; anything else is comma-separated CSV with a header row. Callers that know the format pass
`format=` instead.

Rules, decided once here:
- JSONL: read as UTF-8; blank lines are skipped; a row's line number is its line in the file (1-based). A line
  that is not valid JSON, or valid JSON that is not an object, is yielded as a `BadRow` marker (never raised
  by `iter_rows`), so a caller can collect every bad line (`ecr data check`) or stop at the first one.
- CSV/TSV: read as UTF-8 with an optional byte-order mark (`utf-8-sig`, what spreadsheet exports write). Keys
  are the header's column names stripped of surrounding whitespace and lower-cased (`" Emotion"` ->
  `"emotion"`); values are kept as read (strings; a short row's missing cells are None); cells past the
  header's width are dropped. A row's line number is the CSV reader's line number: the header is line 1, so
  the first data row is line 2 (a quoted field spanning lines gives the record's last line).
- Both: a file that is not UTF-8 raises `ManifestError` naming `file:line` of the first undecodable byte (from
  `iter_rows`, so every caller gets it; Python's own `UnicodeDecodeError` names neither).

`read_rows` is the strict form (the first bad row or a missing file raises `ManifestError` naming
`file:line`); `read_jsonl` is the notebook helper (a list of row dicts). `markdown_table` is the one writer of
rows as a markdown table (TensorBoard text, `ecr score`, `ecr model info`), here so every layer can use it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ecr.errors import ManifestError, reading_text

RowFormat = Literal["jsonl", "csv", "tsv"]
JSONL_SUFFIXES: tuple[str, ...] = (".jsonl", ".json", ".ndjson")

Row = dict[str, Any]


@dataclass(frozen=True)
class BadRow:
    """A line that holds no row: `reason` says why, ready to follow `file:line: ` in a message.

    `json_error` is the JSON decoder's message when the line is not valid JSON; None when the line is valid JSON
    but not an object.
    """

    reason: str
    json_error: str | None = None


def row_format(path: str | Path) -> RowFormat:
    """The format `iter_rows` reads `path` as, from its suffix (see the module docstring)."""
    suffix = Path(path).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    return "tsv" if suffix == ".tsv" else "csv"


def iter_rows(path: str | Path, *, format: RowFormat | None = None) -> Iterator[tuple[int, Row | BadRow]]:
    """(line number, row dict or `BadRow`) of every row of a JSONL/CSV/TSV file; `format` None: by suffix.

    Opening a missing file raises `FileNotFoundError` when iteration starts (`read_rows` reports it as a
    `ManifestError`). A byte sequence that is not UTF-8 raises `ManifestError` naming `file:line`.
    """
    path = Path(path)
    with reading_text(path):
        yield from _iter_rows(path, format or row_format(path))


def _iter_rows(path: Path, fmt: RowFormat) -> Iterator[tuple[int, Row | BadRow]]:
    if fmt == "jsonl":
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    yield lineno, BadRow(f"invalid JSON ({err.msg})", json_error=err.msg)
                    continue
                yield lineno, row if isinstance(row, dict) else BadRow("a row must be a JSON object")
        return
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t" if fmt == "tsv" else ",")
        for raw in reader:
            yield reader.line_num, {k.strip().lower(): v for k, v in raw.items() if k is not None}


def read_rows(path: str | Path, *, what: str = "file", format: RowFormat | None = None) -> list[tuple[int, Row]]:
    """Every (line number, row dict) of `path`; `what` names the file in the missing-file message.

    Raises:
        ManifestError: `"{path}: {what} does not exist"`, `"{path}:{line}: {reason}"` at the first bad row, or
            `"{path}:{line}: not UTF-8 text ..."`.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: {what} does not exist")
    rows: list[tuple[int, Row]] = []
    for lineno, row in iter_rows(path, format=format):
        if isinstance(row, BadRow):
            raise ManifestError(f"{path}:{lineno}: {row.reason}")
        rows.append((lineno, row))
    return rows


def read_jsonl(path: str | Path) -> list[Row]:
    """The rows of a JSONL file whatever its suffix (manifests, predictions, labelled sentences), for notebooks.

    Raises:
        ManifestError: the file does not exist, a line is not a JSON object, or the file is not UTF-8 (naming
            `file:line`).
    """
    return [row for _, row in read_rows(path, what="JSONL file", format="jsonl")]


def markdown_table(header: Sequence[object], rows: Sequence[Sequence[object]], *, align: bool = False) -> str:
    """A GitHub-markdown table. Pipes in cells are escaped and newlines become `<br>`, so multi-line completions
    fit a cell; `align=True` pads every column to one width (a table printed to a terminal)."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", "<br>")

    cells = [[cell(c) for c in header], *[[cell(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) if align else 0 for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|" if align else "|" + "---|" * len(header)
    return "\n".join([line(cells[0]), rule, *map(line, cells[1:])])


__all__ = [
    "JSONL_SUFFIXES",
    "BadRow",
    "Row",
    "RowFormat",
    "iter_rows",
    "markdown_table",
    "read_jsonl",
    "read_rows",
    "row_format",
]
