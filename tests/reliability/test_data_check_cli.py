"""`ecr data check` through the command line on a dataset it may not write into, and with stacked configs.

- a read-only dataset (a real read-only tmpfs, where one can be mounted, i.e. as root on Linux): the check never
  writes into it; with good rows it exits 0, with bad rows it prints every bad row (no empty field) and exits
  1, the list going to `--bad_rows` or `data_check_bad_rows.jsonl` in the working directory;
- `--config A --config B`: B's `data:` section merges into A's as `ecr fit` stacks them (B gives the root).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from faults import record_outcome, run_ecr

from ecr.fixtures import synthesize

TABLE = "ecr data check (dataset -> outcome)"


@pytest.fixture
def read_only_dataset(tmp_path: Path):
    """Two good synthetic clips on a tmpfs remounted read-only; its manifest inside."""
    mount = tmp_path / "ro"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        synthesize(mount, num_clips=2, labels="dfew", seed=0, size=32, duration=1.0, avi_fraction=0.0)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, capture_output=True)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _check(root: Path, manifest: Path, cwd: Path, *extra: str):  # noqa: ANN202
    args = ["data", "check", "--root", str(root), "--manifest", str(manifest), "--format", "custom",
            "--labels", "dfew", "--num_frames", "2", *extra]  # fmt: skip
    return run_ecr(args, cwd=cwd)


def _outcome(proc) -> str:  # noqa: ANN001
    if "Traceback" in proc.stderr or "OSError" in proc.stderr:
        return f"wrong error (rc {proc.returncode})"
    return {0: "ok (rc 0)", 1: "bad rows listed (rc 1)"}.get(proc.returncode, f"rc {proc.returncode}")


def test_a_read_only_dataset_with_good_rows_checks_clean(read_only_dataset: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    proc = _check(read_only_dataset, read_only_dataset / "manifest.jsonl", work)
    record_outcome(TABLE, "7. read-only dataset, good rows", "ecr data check", _outcome(proc))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "all 2 rows are usable" in proc.stdout
    assert not list(work.iterdir())  # no empty bad-row file either


def test_a_read_only_dataset_with_bad_rows_lists_them(read_only_dataset: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    manifest = tmp_path / "manifest.jsonl"
    rows = (read_only_dataset / "manifest.jsonl").read_text()
    manifest.write_text(rows + json.dumps({"video": "gone.mp4", "label": "happy"}) + "\n"
                        + json.dumps({"video": "x.mp4", "label": "zzz"}) + "\n")  # fmt: skip
    proc = _check(read_only_dataset, manifest, work)
    record_outcome(TABLE, "7. read-only dataset, bad rows", "ecr data check", _outcome(proc))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "OSError" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "gone.mp4: unreadable" in proc.stderr and f"{manifest}:4: manifest: " in proc.stderr, proc.stderr
    assert ": : " not in proc.stderr  # a manifest row has no path or id: no empty field
    written = [json.loads(line) for line in (work / "data_check_bad_rows.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in written] == ["manifest", "unreadable"]
    elsewhere = tmp_path / "bad.jsonl"
    proc = _check(read_only_dataset, manifest, work, "--bad_rows", str(elsewhere))
    assert proc.returncode == 1 and len(elsewhere.read_text().splitlines()) == 2, proc.stderr[-3000:]


def test_stacked_configs_merge_their_data_sections(tmp_path: Path) -> None:
    root = tmp_path / "clips"
    manifest = synthesize(root, num_clips=2, labels="dfew", seed=0, size=32, duration=1.0, avi_fraction=0.0)
    stage = {"data": {"class_path": "ecr.data.ClipDataModule",
                      "init_args": {"manifest": str(manifest), "labels": "dfew", "num_frames": 2}},
             "model": {"class_path": "some.Module"}}  # fmt: skip
    local = {"data": {"init_args": {"root": str(root)}}}  # an overlay that only says where the data is
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(stage))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(local))
    proc = run_ecr(["data", "check", "--config", str(tmp_path / "a.yaml"), "--config", str(tmp_path / "b.yaml")],
                   cwd=tmp_path)  # fmt: skip
    record_outcome(TABLE, "8. --config A --config B", "ecr data check", _outcome(proc))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "all 2 rows are usable" in proc.stdout
