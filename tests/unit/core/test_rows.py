"""`ecr.rows`: the one JSONL/CSV/TSV row reader (line numbers, bad-line markers, CSV keys, strict errors)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ecr.errors import ManifestError
from ecr.rows import BadRow, iter_rows, read_jsonl, read_rows, row_format

JSONL = '{"text": "a", "n": 1}\n\n   \n{not json\n[1, 2]\n"just a string"\n{"text": "b"}\n'


def test_jsonl_line_numbers_skip_blank_lines_and_mark_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(JSONL)
    got = list(iter_rows(path))
    assert [line for line, _ in got] == [1, 4, 5, 6, 7]  # lines 2-3 are blank
    assert got[0][1] == {"text": "a", "n": 1} and got[4][1] == {"text": "b"}
    bad_json, not_object, string = got[1][1], got[2][1], got[3][1]
    assert isinstance(bad_json, BadRow) and bad_json.reason.startswith("invalid JSON (")
    assert bad_json.json_error and bad_json.reason == f"invalid JSON ({bad_json.json_error})"
    assert not_object == string == BadRow("a row must be a JSON object")
    assert not_object.json_error is None


def test_read_rows_raises_at_the_first_bad_line_and_on_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "rows.ndjson"
    path.write_text(JSONL)
    with pytest.raises(ManifestError, match=re.escape(f"{path}:4: invalid JSON (")):
        read_rows(path)
    path.write_text('{"a": 1}\n\n[1]\n')
    with pytest.raises(ManifestError, match=re.escape(f"{path}:3: a row must be a JSON object")):
        read_rows(path)
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert read_rows(path) == [(1, {"a": 1}), (3, {"a": 2})]
    with pytest.raises(ManifestError, match=re.escape(f"{tmp_path / 'none.jsonl'}: sentence file does not exist")):
        read_rows(tmp_path / "none.jsonl", what="sentence file")


def test_csv_with_bom_and_mixed_case_headers(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes('\ufeff Video ,EMOTION,Reason\nclip1.mp4,Happy,"He smiles, widely."\nclip2.mp4,sad\n'.encode())
    got = list(iter_rows(path))
    assert got == [
        (2, {"video": "clip1.mp4", "emotion": "Happy", "reason": "He smiles, widely."}),
        (3, {"video": "clip2.mp4", "emotion": "sad", "reason": None}),  # a short row: missing cells are None
    ]


def test_csv_line_numbers_follow_the_file(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text('id,text\na,"line one\nline two"\nb,plain\nc,x,extra cell\n')
    assert read_rows(path) == [
        (3, {"id": "a", "text": "line one\nline two"}),  # a quoted field spanning lines: the record's last line
        (4, {"id": "b", "text": "plain"}),
        (5, {"id": "c", "text": "x"}),  # cells past the header are dropped
    ]


def test_tsv_and_format_by_suffix(tmp_path: Path) -> None:
    path = tmp_path / "rows.TSV"
    path.write_text("Text\tLabel\nhello, world\thappy\n")
    assert read_rows(path) == [(2, {"text": "hello, world", "label": "happy"})]
    assert [row_format(f"x{s}") for s in (".jsonl", ".JSON", ".ndjson", ".tsv", ".csv", ".txt", "")] == [
        "jsonl", "jsonl", "jsonl", "tsv", "csv", "csv", "csv",
    ]  # fmt: skip


def test_read_jsonl_reads_json_lines_whatever_the_suffix(tmp_path: Path) -> None:
    path = tmp_path / "predictions.txt"
    path.write_text('{"completion": "x"}\n\n{"completion": "y"}\n')
    assert read_jsonl(path) == [{"completion": "x"}, {"completion": "y"}]
    path.write_text('{"completion": "x"}\n{oops\n')
    with pytest.raises(ManifestError, match=re.escape(f"{path}:2: invalid JSON")):
        read_jsonl(path)
    with pytest.raises(ManifestError, match="does not exist"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_explore_re_exports_the_reader() -> None:
    from ecr import explore, rows

    assert explore.read_jsonl is rows.read_jsonl


@pytest.mark.parametrize(
    ("name", "fmt", "data", "line"),
    [
        ("rows.jsonl", None, b'{"text": "a"}\n\n{"text": "caf\xe9"}\n', 3),
        ("rows.csv", None, "text,label\na,happy\n".encode("utf-8-sig") + b"caf\xe9,happy\n", 3),
        ("rows.tsv", None, b"text\tlabel\na\thappy\nb\thappy\n\xff\thappy\n", 4),
        ("rows.txt", "jsonl", b'{"text": "a"}\n\x80\n', 2),
    ],
)
def test_non_utf8_is_a_manifest_error_naming_file_and_line_for_every_reader(
    tmp_path: Path, name: str, fmt: str | None, data: bytes, line: int
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    want = re.escape(f"{path}:{line}: not UTF-8 text")
    with pytest.raises(ManifestError, match=want) as info:
        list(iter_rows(path, format=fmt))  # type: ignore[arg-type]
    assert isinstance(info.value.__cause__, UnicodeDecodeError)
    with pytest.raises(ManifestError, match=want):
        read_rows(path, format=fmt)  # type: ignore[arg-type]
    if fmt == "jsonl" or path.suffix == ".jsonl":
        with pytest.raises(ManifestError, match=want):
            read_jsonl(path)
