"""`ecr data check` over a dataset with every kind of bad row: all are reported, the exit code is 1."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ecr.cli import main
from ecr.data.check import check_dataset
from ecr.data.manifests import read_custom_manifest
from ecr.fixtures.index_clips import index_frames, make_index_clip, second_tones
from ecr.fixtures.video import write_clip


@pytest.fixture(scope="module")
def messy_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("messy")
    make_index_clip(root / "good.mp4", seconds=2)
    make_index_clip(root / "good.avi", seconds=2)
    make_index_clip(root / "silent.mp4", seconds=1, audio=False)
    write_clip(root / "short_audio.mp4", index_frames(30), 10, second_tones(1.0), 16000)  # 3 s video, 1 s audio
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\xff" * 500)
    (root / "empty.mp4").write_bytes(b"")
    rows = [
        {"video": "good.mp4", "label": "happy"},
        {"video": "good.avi", "label": "sad", "start": 0.5, "end": 1.5},
        {"video": "silent.mp4", "label": "sad"},
        {"video": "short_audio.mp4", "label": "angry"},
        {"video": "corrupt.mp4", "label": "fear"},
        {"video": "empty.mp4", "label": "fear"},
        {"video": "missing.mp4", "label": "fear"},
        {"video": "good.mp4", "label": "happy", "start": 1.0, "end": 5.0},
        {"video": "good.mp4", "label": "bored"},
        {"video": "../escape.mp4", "label": "happy"},
    ]
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


EXPECTED = {  # manifest line -> reason
    3: "no_audio",
    4: "duration_mismatch",
    5: "unreadable",
    6: "empty",
    7: "unreadable",
    8: "window",
    9: "manifest",
    10: "manifest",
}


def test_check_dataset_finds_every_problem(messy_dataset: Path) -> None:
    errors: list = []
    recs = read_custom_manifest(messy_dataset / "manifest.jsonl", labels="dfew", errors=errors)
    report = check_dataset(recs, manifest_errors=errors)
    found = {int(p.row.rsplit(":", 1)[1]): p.reason for p in report.problems}
    assert found == EXPECTED
    assert report.total == 10
    assert report.num_bad == 8
    assert not report.ok
    assert report.label_counts == {"happy": 1, "sad": 1}
    assert report.seconds == pytest.approx(3.0)


def test_ecr_data_check_cli_exits_1_and_writes_bad_rows(messy_dataset: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    with pytest.raises(SystemExit) as info:
        main(
            [
                "data",
                "check",
                "--manifest",
                str(messy_dataset / "manifest.jsonl"),
                "--root",
                str(messy_dataset),
                "--format",
                "custom",
                "--labels",
                "dfew",
                "--bad-rows",
                str(bad),
                "--num_workers",
                "2",
            ]
        )
    assert info.value.code == 1
    out = capsys.readouterr()
    assert re.search(r"^bad\s+8$", out.out, re.M)
    assert re.search(r"^  no_audio\s+1$", out.out, re.M)
    lines = [json.loads(line) for line in bad.read_text().splitlines()]
    assert {int(r["row"].rsplit(":", 1)[1]): r["reason"] for r in lines} == EXPECTED
    assert all(set(r) == {"row", "id", "path", "reason", "detail"} for r in lines)
    assert any(r["path"].endswith("corrupt.mp4") for r in lines)


def test_ecr_data_check_reads_the_data_section_of_a_stage_config(messy_dataset: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"video": "good.mp4", "label": "happy"}) + "\n")
    cfg = tmp_path / "stage.yaml"
    cfg.write_text(
        "seed_everything: 1\ntrainer:\n  max_epochs: 1\n  callbacks:\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "model:\n  class_path: some.Module\n  init_args: {lr: 0.1}\n"
        f"data:\n  class_path: ecr.data.ClipDataModule\n  init_args:\n    root: {messy_dataset}\n"
        f"    manifest: {good}\n    labels: dfew\n    num_frames: 4\n"
    )
    with pytest.raises(SystemExit) as info:
        main(["data", "check", "--config", str(cfg), "--bad-rows", str(tmp_path / "b.jsonl")])
    assert info.value.code == 0
