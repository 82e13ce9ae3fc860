"""Manifest readers on small fabricated DFEW / MAFW / EMER / custom layouts (no media needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecr.data import (
    read_custom_manifest,
    read_dataset,
    read_dfew,
    read_emer,
    read_mafw,
    read_mafw_multi_xlsx,
    read_mafw_xlsx,
)
from ecr.errors import ManifestError


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


# ------------------------------------------------------------------------------------------------ custom
def test_custom_jsonl_fields_and_meta(tmp_path: Path) -> None:
    rows = [
        {
            "video": "a/1.mp4",
            "label": "Happiness",
            "explanation": "She smiles.",
            "split": "train",
            "explanation_consistent": False,
        },
        {
            "video": "a/2.avi",
            "audio": "a/2.wav",
            "start": 1.5,
            "end": 3,
            "label": "sad",
            "split": "validation",
        },
        {"id": "x", "video": "3.mp4", "label": "angry"},
    ]
    m = tmp_path / "m.jsonl"
    m.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    recs = read_custom_manifest(m, labels="dfew")
    assert [r.label for r in recs] == ["happy", "sad", "angry"]  # normalised through the label set
    assert recs[0].video == tmp_path / "a" / "1.mp4"
    assert recs[0].explanation == "She smiles."
    assert recs[0].meta == {"explanation_consistent": False}
    assert recs[0].split == "train"
    assert recs[1].audio == tmp_path / "a" / "2.wav"
    assert (recs[1].start, recs[1].end) == (1.5, 3.0)
    assert recs[1].split == "val"
    assert recs[1].id == "2@1.5-3"
    assert recs[2].id == "x"
    assert recs[2].split is None
    assert recs[2].source == f"{m}:3"


def test_custom_csv_with_other_root(tmp_path: Path) -> None:
    m = tmp_path / "meta" / "m.csv"
    m.parent.mkdir()
    m.write_text("video,label,start,end,split\nclips/1.mp4,fear,,,test\nclips/2.mp4,Surprised,0.5,2,\n")
    recs = read_custom_manifest(m, root=tmp_path / "data", labels="dfew")
    assert [r.video for r in recs] == [tmp_path / "data/clips/1.mp4", tmp_path / "data/clips/2.mp4"]
    assert [r.label for r in recs] == ["fear", "surprise"]
    assert recs[0].start is None
    assert recs[1].start == 0.5
    assert recs[1].source == f"{m}:3"


@pytest.mark.parametrize("bad", ["../outside.mp4", "a/../../outside.mp4", "/etc/passwd"])
def test_path_escaping_the_root_is_rejected_with_file_and_line(tmp_path: Path, bad: str) -> None:
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"video": "ok.mp4", "label": "sad"}) + "\n" + json.dumps({"video": bad, "label": "sad"}))
    with pytest.raises(ManifestError, match=rf"{m}:2: path .* escapes the dataset root"):
        read_custom_manifest(m, labels="dfew")


def test_unknown_label_names_file_line_and_label_set(tmp_path: Path) -> None:
    m = tmp_path / "m.csv"
    m.write_text("video,label\n1.mp4,happy\n2.mp4,bored\n")
    with pytest.raises(ManifestError, match=rf"{m}:3: unknown label 'bored'.*'happy', 'sad', 'neutral'"):
        read_custom_manifest(m, labels="dfew")


def test_errors_list_collects_every_bad_row(tmp_path: Path) -> None:
    m = tmp_path / "m.jsonl"
    m.write_text(
        "\n".join(
            [
                json.dumps({"video": "1.mp4", "label": "sad"}),
                json.dumps({"video": "2.mp4", "label": "bored"}),
                "{not json",
                json.dumps({"video": "../3.mp4", "label": "sad"}),
                json.dumps({"video": "4.mp4", "label": "sad", "start": 2, "end": 1}),
                json.dumps({"label": "sad"}),
                json.dumps({"video": "5.mp4", "label": "sad", "split": "holdout"}),
            ]
        )
    )
    errors: list[ManifestError] = []
    recs = read_custom_manifest(m, labels=["sad", "happy"], errors=errors)
    assert [r.id for r in recs] == ["1"]
    assert [str(e).split(": ")[0] for e in errors] == [f"{m}:{i}" for i in range(2, 8)]


def test_custom_label_list_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        read_custom_manifest(tmp_path / "nope.jsonl", labels="dfew")


# --------------------------------------------------------------------------------------------------- DFEW
def _dfew(tmp_path: Path) -> Path:
    root = tmp_path / "DFEW"
    (root / "label").mkdir(parents=True)
    (root / "label" / "single_trainset_2.csv").write_text("video_name,label\n1,1\n2,7\n00003,4\n")
    (root / "label" / "single_testset_2.csv").write_text("video_name,label\n4,3\n")
    _touch(root / "clip" / "1.mp4")
    _touch(root / "clip" / "2.avi")
    _touch(root / "clip" / "00003.mp4")
    return root


def test_dfew_reader(tmp_path: Path) -> None:
    root = _dfew(tmp_path)
    train = read_dfew(root, fold=2, split="train")
    assert [(r.id, r.label) for r in train] == [("1", "happy"), ("2", "fear"), ("00003", "angry")]
    assert [r.video.name for r in train] == ["1.mp4", "2.avi", "00003.mp4"]
    test = read_dfew(root, fold=2, split="test")
    assert test[0].label == "neutral"
    assert test[0].video == root / "clip" / "4.mp4"
    assert len(read_dataset("dfew", root, fold=2)) == 4


def test_dfew_label_file_without_a_header_keeps_its_first_row(tmp_path: Path) -> None:
    root = _dfew(tmp_path)
    (root / "label" / "single_trainset_3.csv").write_text("1,1\n2,7\n")
    assert [(r.id, r.label) for r in read_dfew(root, fold=3)] == [("1", "happy"), ("2", "fear")]


def test_dfew_bad_label_id_and_missing_fold(tmp_path: Path) -> None:
    root = _dfew(tmp_path)
    (root / "label" / "single_trainset_3.csv").write_text("video_name,label\n1,8\n")
    with pytest.raises(ManifestError, match=r"single_trainset_3.csv:2: unknown label id '8'"):
        read_dfew(root, fold=3)
    with pytest.raises(ManifestError, match="fold 4"):
        read_dfew(root, fold=4)


# --------------------------------------------------------------------------------------------------- MAFW
def _workbook(path: Path, rows: list[list]) -> None:
    import openpyxl

    wb = openpyxl.Workbook()
    for row in rows:
        wb.active.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)


def _mafw(tmp_path: Path, xlsx_rows: list[list] | None = None) -> Path:
    root = tmp_path / "MAFW"
    d = root / "Train & Test Set" / "single" / "no_caption" / "set_1"
    d.mkdir(parents=True)
    (d / "train.txt").write_text("00001.mp4 anger\n00002.mp4 helplessness\n\n00003.mp4\n")
    (d / "test.txt").write_text("00004.mp4 happiness\n")
    _touch(root / "clips" / "00001.mp4")
    if xlsx_rows is not None:
        _workbook(root / "Labels" / "single-set.xlsx", xlsx_rows)
    return root


def _xrow(name: str, label_id: object) -> list:
    return [name] + [None] * 11 + [label_id]


def test_mafw_reader_with_xlsx(tmp_path: Path) -> None:
    rows = [
        ["MAFW single-label annotations"],
        ["name"] + ["x"] * 11 + ["label"],
        _xrow("00001.mp4", 1),
        _xrow("00002", 10),
        _xrow("00003.mp4", 11),
        _xrow("00004.mp4", "4"),
    ]
    root = _mafw(tmp_path, rows)
    assert read_mafw_xlsx(root / "Labels" / "single-set.xlsx") == {
        "00001": "anger",
        "00002": "helplessness",
        "00003": "disappointment",
        "00004": "happiness",
    }
    train = read_mafw(root, fold=1, split="train")
    assert [(r.id, r.label) for r in train] == [
        ("00001", "anger"),
        ("00002", "helplessness"),
        ("00003", "disappointment"),
    ]
    assert train[0].video == root / "clips" / "00001.mp4"
    assert [r.label for r in read_dataset("mafw", root)] == [
        "anger",
        "helplessness",
        "disappointment",
        "happiness",
    ]


def test_mafw_compound_labels_from_the_multi_set_workbook(tmp_path: Path) -> None:
    root = _mafw(tmp_path, [_xrow("00001.mp4", 1), _xrow("00002.mp4", 10), _xrow("00003.mp4", 11)])
    _workbook(
        root / "Labels" / "multi-set.xlsx", [["name"] + ["x"] * 12, _xrow("00001.mp4", "1,4"), _xrow("00002", "10")]
    )
    assert read_mafw_multi_xlsx(root / "Labels" / "multi-set.xlsx") == {
        "00001": ["anger", "happiness"],
        "00002": ["helplessness"],
    }
    train = {r.id: r for r in read_mafw(root, fold=1, split="train")}
    assert train["00001"].label == "anger" and train["00001"].meta["labels"] == ["anger", "happiness"]
    assert "labels" not in train["00003"].meta  # not in the compound set: single-label only
    _workbook(root / "Labels" / "multi-set.xlsx", [_xrow("00001.mp4", "1,12")])
    with pytest.raises(ManifestError, match=r"multi-set.xlsx:1: label id '12' outside 1..11"):
        read_mafw(root, fold=1, split="train")


def test_mafw_label_missing_or_conflicting(tmp_path: Path) -> None:
    root = _mafw(tmp_path)  # no xlsx: 00003 has no label anywhere
    with pytest.raises(ManifestError, match=r"train.txt:4: no label for '00003'"):
        read_mafw(root)
    root2 = _mafw(tmp_path / "b", [_xrow("00001.mp4", 2), _xrow("00003.mp4", 5)])
    with pytest.raises(ManifestError, match=r"train.txt:1: label 'anger' disagrees"):
        read_mafw(root2)


# --------------------------------------------------------------------------------------------------- EMER
def test_emer_reader(tmp_path: Path) -> None:
    csv_path = tmp_path / "EMER" / "emer.csv"
    csv_path.parent.mkdir()
    csv_path.write_text(
        "names,emotions,subtitles,reasons\n"
        'sample_1,worried,"I can\'t, not now.","Her brows knit. The voice shakes."\n'
        "sample_2,happy,Great!,She laughs.\n"
    )
    _touch(tmp_path / "EMER" / "video" / "sample_1.avi")
    recs = read_emer(csv_path, labels="mafw")
    assert [(r.id, r.label) for r in recs] == [("sample_1", "anxiety"), ("sample_2", "happiness")]
    assert recs[0].video == tmp_path / "EMER" / "video" / "sample_1.avi"
    assert recs[0].explanation == "Her brows knit. The voice shakes."
    assert recs[0].meta["subtitles"] == "I can't, not now."
    bad = tmp_path / "bad.csv"
    bad.write_text("names,subtitles\nx,y\n")
    with pytest.raises(ManifestError, match=r"lacks columns \['emotions'\]"):
        read_emer(bad)


def test_decode_errors_keep_their_reason_without_the_cpp_location() -> None:
    from ecr.data.decode import _short

    err = RuntimeError("Could not seek: at /b/SingleStreamDecoder.cpp:512, format does not support seeking")
    assert _short(err) == "Could not seek: format does not support seeking"
