"""Bad input in predictions files (issue #9): every bad row is an error naming `file:line`, or with
`on_error="skip"` a counted skip; ids are checked against a manifest split (`not_in_dataset`, `label_mismatch`,
`missing_clips`), through `read_predictions`, `score_command` and `report_command`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ecr.errors import ManifestError
from ecr.evaluation.predictions import (
    SKIP_REASONS,
    SkippedRows,
    load_predictions,
    read_predictions,
    read_split,
)
from ecr.evaluation.report import report_command
from ecr.evaluation.score import score_command
from ecr.labels import DFEW

from .fakes import write_predictions
from .test_score import rows

GOOD = rows()  # c0..c5: happy, happy, sad, sad, angry, fear
# reason -> a bad line appended after the six good rows (line 7)
BAD_LINES = {
    "malformed": "{not json",
    "missing_field": json.dumps({"id": "x1", "prediction": "happy"}),
    "unknown_label": json.dumps({"id": "x2", "label": "bored", "prediction": "happy"}),
    "duplicate_id": json.dumps({"id": "c0", "label": "happy", "prediction": "sad"}),
}


def _file(tmp_path: Path, extra: list[str], name: str = "p.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in GOOD) + "".join(x + "\n" for x in extra), encoding="utf-8")
    return path


@pytest.mark.parametrize("reason", sorted(BAD_LINES))
def test_a_bad_row_names_its_line_or_is_skipped_and_counted(tmp_path: Path, reason: str) -> None:
    path = _file(tmp_path, [BAD_LINES[reason], json.dumps({"id": "c9", "label": "sad", "prediction": "sad"})])
    with pytest.raises(ManifestError, match=r"p\.jsonl:7: "):
        read_predictions(path, DFEW)
    skipped = SkippedRows()
    kept = read_predictions(path, DFEW, "skip", skipped=skipped)
    assert [p.id for p in kept] == ["c0", "c1", "c2", "c3", "c4", "c5", "c9"]  # the row after the bad one is read
    assert skipped.as_dict() == {reason: 1} and skipped.first[0].startswith(f"{path}:7: ")
    assert reason in SKIP_REASONS


def test_the_later_duplicate_is_the_one_skipped(tmp_path: Path) -> None:
    skipped = SkippedRows()
    kept = read_predictions(_file(tmp_path, [BAD_LINES["duplicate_id"]]), DFEW, "skip", skipped=skipped)
    assert kept[0].id == "c0" and kept[0].prediction == "happy" and len(kept) == 6
    assert "duplicate id 'c0' (first at line 1)" in skipped.first[0]


def test_a_file_of_bad_rows_only_is_an_error_even_with_skip(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("{not json\n" + BAD_LINES["unknown_label"] + "\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"bad\.jsonl: every row is bad \(malformed: 1, unknown_label: 1\)"):
        read_predictions(path, DFEW, "skip", skipped=SkippedRows())
    with pytest.raises(ValueError, match="needs a SkippedRows"):
        read_predictions(path, DFEW, "skip")


def test_score_command_skips_counts_and_prints_at_the_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _file(tmp_path, list(BAD_LINES.values()))
    with pytest.raises(ManifestError, match=r"p\.jsonl:7: invalid JSON"):
        score_command(path, "dfew", judge="none", bootstrap=0)
    assert score_command(path, "dfew", judge="none", bootstrap=0, on_error="skip") == 0
    m = json.loads((tmp_path / "p.jsonl.metrics.json").read_text())
    assert m["n"] == 6 and m["war"] == pytest.approx(4 / 6)  # the six good rows, as if the bad ones were absent
    assert m["skipped"] == {"duplicate_id": 1, "malformed": 1, "missing_field": 1, "unknown_label": 1}
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"{path}: skipped 4 bad rows (duplicate_id: 1, malformed: 1, missing_field: 1")
    assert f"first: {path}:7: invalid JSON" in err[-1] and f"{path}:8: " in err[-1]
    score_command(_file(tmp_path, [], "clean.jsonl"), "dfew", judge="none", bootstrap=0)
    assert json.loads((tmp_path / "clean.jsonl.metrics.json").read_text())["skipped"] == {}


# ------------------------------------------------------------------------------------------ the dataset
def _manifest(tmp_path: Path, *, with_split: bool = True, suffix: str = ".jsonl") -> Path:
    """c0..c5 (the predictions' clips, their labels) and c6 in test, t0 in train (JSONL, or CSV)."""
    labels = [r["label"] for r in GOOD] + ["neutral"]
    entries = [{"video": f"clips/c{i}.mp4", "label": lbl, "split": "test"} for i, lbl in enumerate(labels)]
    entries.append({"video": "clips/t0.mp4", "label": "sad", "split": "train"})
    if not with_split:
        entries = [{k: v for k, v in e.items() if k != "split"} for e in entries]
    path = tmp_path / f"manifest{suffix}"
    if suffix == ".csv":
        keys = list(entries[0])
        path.write_text("".join(",".join(row) + "\n" for row in [keys, *([e[k] for k in keys] for e in entries)]))
    else:
        path.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    return path


def test_ids_outside_the_split_and_other_labels_name_the_line(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    dataset = read_split(manifest, DFEW, "test")
    assert list(dataset.labels) == ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]
    extra = [
        json.dumps({"id": "t0", "label": "sad", "prediction": "sad"}),  # a train clip
        json.dumps({"id": "zz", "label": "sad", "prediction": "sad"}),  # in no split
        json.dumps({"id": "c6", "label": "happy", "prediction": "happy"}),  # the manifest says neutral
    ]
    path = _file(tmp_path, extra)
    with pytest.raises(ManifestError, match=r"p\.jsonl:7: id 't0' is not a clip of the 'test' split of .*manifest"):
        load_predictions(path, DFEW, dataset=dataset)
    read = load_predictions(path, DFEW, "skip", dataset)
    assert read.skipped.as_dict() == {"label_mismatch": 1, "not_in_dataset": 2}
    assert "p.jsonl:9: label 'happy' of 'c6' differs from the manifest's 'neutral'" in read.skipped.first[2]
    assert [p.id for p in read.rows] == ["c0", "c1", "c2", "c3", "c4", "c5"]
    assert read.report() == {
        "skipped": {"label_mismatch": 1, "not_in_dataset": 2},
        "missing_clips": {"n": 1, "first": ["c6"]},
    }


def test_clips_without_a_prediction_are_an_error_unless_skipping(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    path = _file(tmp_path, [])
    with pytest.raises(ManifestError, match=r"p\.jsonl: 1 of the 7 clips of the 'test' split .* \(first: c6\)"):
        score_command(path, "dfew", judge="none", bootstrap=0, manifest=manifest)
    assert score_command(path, "dfew", judge="none", bootstrap=0, manifest=manifest, on_error="skip") == 0
    m = json.loads((tmp_path / "p.jsonl.metrics.json").read_text())
    assert m["missing_clips"] == {"n": 1, "first": ["c6"]} and m["skipped"] == {} and m["n"] == 6
    # the train split holds t0 only: every prediction is then outside it, an error even with skip
    with pytest.raises(ManifestError, match=r"every row is bad \(not_in_dataset: 6\)"):
        score_command(path, "dfew", judge="none", bootstrap=0, manifest=manifest, split="train", on_error="skip")


def test_split_options_keep_their_flat_spelling_on_the_command_line(tmp_path: Path) -> None:
    """`ecr score`/`ecr report` take `--manifest --split --val_fraction --test_fraction --split_seed` (one definition,
    `DatasetSplitOptions`) in a subprocess: the train split holds none of the predicted clips -> exit 2."""
    ecr = shutil.which("ecr", path=str(Path(sys.executable).parent))
    assert ecr is not None
    manifest, path = _manifest(tmp_path), _file(tmp_path, [])
    common = ["--labels", "dfew", "--judge", "none", "--bootstrap", "0", "--manifest", str(manifest)]
    split = ["--val_fraction", "0.2", "--test_fraction", "0.2", "--split_seed", "3"]
    done = subprocess.run(
        [ecr, "score", str(path), *common, *split, "--on_error", "skip"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "p.jsonl.metrics.json").read_text())["missing_clips"]["first"] == ["c6"]
    for command, out in (("score", []), ("report", ["--out", str(tmp_path / "r")])):
        bad = subprocess.run(
            [ecr, command, str(path), *common, "--split", "train", "--on_error", "skip", *out],
            capture_output=True,
            text=True,
        )
        assert bad.returncode == 2 and "not_in_dataset: 6" in bad.stderr, (command, bad.stderr)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_rows_without_a_split_are_split_as_the_datamodule_does(tmp_path: Path, suffix: str) -> None:
    from ecr.data import ClipDataModule

    manifest = _manifest(tmp_path, with_split=False, suffix=suffix)
    dm = ClipDataModule(root=tmp_path, manifest=manifest, labels="dfew", val_fraction=0.25, test_fraction=0.25, seed=3)
    dm.setup()
    assert dm.splits is not None
    for split in ("train", "val", "test"):
        dataset = read_split(manifest, DFEW, split, val_fraction=0.25, test_fraction=0.25, seed=3)
        assert list(dataset.labels) == [r.id for r in dm.splits[split]]
    with pytest.raises(ManifestError, match=r"the 'test' split is empty .*--test_fraction"):
        read_split(manifest, DFEW, "test", test_fraction=0.0)  # no test clip


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_default_split_is_one_definition_shared_by_data_and_score(tmp_path: Path, suffix: str) -> None:
    """Issue 18.5: a manifest without a split column gives `ecr score`/`ecr report` the DataModule's test clips."""
    import inspect

    from ecr.data import ClipDataModule
    from ecr.evaluation.predictions import dataset_split
    from ecr.evaluation.report import report_command
    from ecr.evaluation.score import score_command

    manifest = _manifest(tmp_path, with_split=False, suffix=suffix)
    dm = ClipDataModule(root=tmp_path, manifest=manifest, labels="dfew")  # every split option at its default
    dm.setup()
    assert dm.splits is not None and dm.splits["test"], "the default split must hold out test clips"
    for split in ("train", "val", "test"):
        assert list(read_split(manifest, DFEW, split).labels) == [r.id for r in dm.splits[split]]
    for fn in (score_command, report_command):  # both take the one definition of the split options
        dataset = inspect.signature(fn).parameters["dataset"]
        assert dataset.kind is inspect.Parameter.VAR_KEYWORD and "DatasetSplitOptions" in str(dataset.annotation)
    for split in ("train", "val", "test"):  # its defaults are the DataModule's
        chosen = dataset_split(DFEW, manifest=manifest, split=split)
        assert chosen is not None and list(chosen.labels) == [r.id for r in dm.splits[split]]


def test_report_command_counts_skipped_rows_on_the_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from .test_report import parse

    a = _file(tmp_path, [BAD_LINES["unknown_label"], BAD_LINES["duplicate_id"]], "a.jsonl")
    b = write_predictions(tmp_path / "b.jsonl", GOOD)
    out = tmp_path / "r"
    with pytest.raises(ManifestError, match=r"a\.jsonl:7: label 'bored'"):
        report_command([a, b], "dfew", out, judge="none", bootstrap=0)
    manifest = _manifest(tmp_path)
    args = {"judge": "none", "bootstrap": 0, "manifest": manifest}
    with pytest.raises(ManifestError, match=r"a\.jsonl:7: "):
        report_command([a, b], "dfew", out, **args)
    assert report_command([a, b], "dfew", out, on_error="skip", **args) == 0
    report = json.loads((out / "report.json").read_text())
    first, second = (r["metrics"] for r in report["runs"])
    assert first["skipped"] == {"duplicate_id": 1, "unknown_label": 1} and second["skipped"] == {}
    assert first["missing_clips"] == second["missing_clips"] == {"n": 1, "first": ["c6"]}
    cells = parse(out / "index.html").cells
    assert cells[(("metric", "skipped"), ("run", "a"))] == "2 (duplicate_id: 1, unknown_label: 1)"
    assert cells[(("metric", "skipped"), ("run", "b"))] == "0"
    assert cells[(("metric", "missing_clips"), ("run", "a"))] == "1 (first: c6)"
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-3].startswith(f"{a}: skipped 2 bad rows (duplicate_id: 1, unknown_label: 1); first: {a}:7: ")
    assert err[-2] == f"{a}: clips of the dataset split without a prediction: 1 (first: c6)"
    assert err[-1] == f"{b}: clips of the dataset split without a prediction: 1 (first: c6)"
