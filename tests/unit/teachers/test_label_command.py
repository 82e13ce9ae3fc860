"""`ecr label` with the offline lexicon teacher: inputs, splitting, dedupe, balancing, errors, CLI dispatch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecr.cli import main
from ecr.teachers.label import label_command

EXPLANATIONS = [
    {"id": "a", "explanation": "The man smiles. He laughs with joy. The room is grey.", "split": "train"},
    {"id": "b", "explanation": "She weeps quietly. The room is grey.", "split": "train"},
    {"id": "c", "explanation": "He is furious and shouts.", "split": "test"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_label_manifest_explanations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_jsonl(tmp_path / "manifest.jsonl", EXPLANATIONS)
    out = tmp_path / "erv" / "sentences.jsonl"
    assert label_command(src, out, labels="dfew") == 0
    rows = read_jsonl(out)
    assert [r["text"] for r in rows] == [
        "The man smiles.",
        "He laughs with joy.",
        "The room is grey.",
        "She weeps quietly.",
        "He is furious and shouts.",
    ]  # fmt: skip  (the repeated "The room is grey." is labelled once)
    by_text = {r["text"]: r for r in rows}
    assert by_text["The room is grey."]["labels"] == ["neutral"]
    assert by_text["She weeps quietly."]["labels"] == ["sad"]
    assert by_text["He is furious and shouts."]["labels"][0] == "angry"
    assert all(r["source"] == "lexicon" and r["probs"] is None and len(r["group"]) == 16 for r in rows)
    summary = json.loads((tmp_path / "erv" / "sentences.jsonl.summary.json").read_text())
    assert summary["sentences"] == 6 and summary["unique_sentences"] == 5 and summary["written"] == 5
    assert summary["missing"] == {}
    printed = capsys.readouterr().out
    assert "label distribution" in printed and "neutral" in printed


def test_splits_filter_and_csv_and_no_split(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "m.jsonl", EXPLANATIONS)
    assert label_command(src, tmp_path / "train.jsonl", splits=["train"]) == 0
    assert all("furious" not in r["text"] for r in read_jsonl(tmp_path / "train.jsonl"))
    csv_src = tmp_path / "d.csv"
    csv_src.write_text('names,reasons\nx,"He is terrified. He runs."\n')
    assert label_command(csv_src, tmp_path / "c.jsonl", text_field="reasons", split_sentences=False) == 0
    assert read_jsonl(tmp_path / "c.jsonl")[0]["text"] == "He is terrified. He runs."


def test_oversampling_rare_classes(tmp_path: Path) -> None:
    rows = [{"text": f"Person {i} smiles happily."} for i in range(9)] + [{"text": "She weeps."}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    assert label_command(src, out, split_sentences=False, balance="oversample", balance_ratio=0.5) == 0
    got = read_jsonl(out)
    sad = [r for r in got if r["labels"] == ["sad"]]
    assert len(sad) == 5 and sum(bool(r.get("augmented")) for r in sad) == 4  # ceil(0.5 * 9) = 5
    assert len({r["group"] for r in sad}) == 1


def test_errors_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert label_command(tmp_path / "missing.jsonl", tmp_path / "o.jsonl") == 2
    assert "input file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "x"}\n')
    assert label_command(bad, tmp_path / "o.jsonl") == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    assert label_command(bad, tmp_path / "o.jsonl", teacher="classifier") == 2
    assert "classifier_path" in capsys.readouterr().err
    assert (
        label_command(write_jsonl(tmp_path / "p.jsonl", [{"completion": "<answer>x</answer>"}]), tmp_path / "o.jsonl")
        == 1
    )
    assert label_command(write_jsonl(tmp_path / "q.jsonl", [{"text": "He smiles."}]), tmp_path / "o.jsonl",
                         balance="paraphrase") == 2  # fmt: skip
    assert "LLM teacher" in capsys.readouterr().err


def test_cli_dispatch(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "m.jsonl", EXPLANATIONS)
    out = tmp_path / "cli.jsonl"
    with pytest.raises(SystemExit) as info:
        main(["label", "--input", str(src), "--output", str(out), "--teacher", "lexicon", "--labels", "mafw",
              "--splitter", "pysbd"])  # fmt: skip
    assert info.value.code == 0
    assert {lbl for r in read_jsonl(out) for lbl in r["labels"]} <= {
        "happiness",
        "sadness",
        "anger",
        "neutral",
        "surprise",
        "fear",
        "disgust",
    }


def test_an_output_that_is_a_folder_or_a_device_is_refused_before_labelling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ecr.errors import ConfigError
    from ecr.teachers.label import write_rows

    texts = write_jsonl(tmp_path / "t.jsonl", [{"text": "He smiles."}])
    assert label_command(texts, tmp_path) == 2
    assert f"{tmp_path}: the output is a folder" in capsys.readouterr().err
    assert not (tmp_path.parent / f"{tmp_path.name}.cache.jsonl").exists()  # refused before the teacher was made
    if Path("/dev/null").exists():
        with pytest.raises(ConfigError, match="not a regular file"):
            write_rows("/dev/null", [{"text": "x"}])  # the atomic rename would have replaced the device
        assert not Path("/dev/null").is_file()
