"""`ecr pipeline` stopped or rerun while a stage runs (issue 19 item 5), through the command line:

- SIGTERM to the pipeline is forwarded to the running stage, the pipeline waits for it and exits 143; no stage
  keeps running behind it and the stage is not stamped as done;
- a stage left running by a killed (SIGKILL) pipeline is a live writer: a second pipeline refuses to wipe its
  folder and names its pid (exit 2);
- export/predict address the checkpoint of the run they follow (`resolve_checkpoint`): the newest version
  folder that holds a checkpoint, never "version_0".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from faults import ecr_command, record_outcome, run_ecr

from ecr.errors import ConfigError

TABLE = "ecr pipeline stopped or rerun mid-stage"
# a stage that writes its pid, then works until it is told to stop (SIGTERM: it records it and exits 143)
STAGE = (
    "import os, signal, sys, time, pathlib; out = pathlib.Path('runs/stage'); out.mkdir(parents=True, exist_ok=True); "
    "signal.signal(signal.SIGTERM, lambda *a: ((out / 'got_sigterm').write_text('1'), sys.exit(143))); "
    "(out / 'pid').write_text(str(os.getpid())); [time.sleep(0.1) for _ in range(3000)]"
)


def _pipeline(tmp: Path) -> Path:
    path = tmp / "pipeline.yaml"
    stage = {"name": "work", "run": f'{sys.executable} -c "{STAGE}"', "outputs": ["runs/stage/pid"],
             "clean": ["runs/stage"]}  # fmt: skip
    path.write_text(yaml.safe_dump({"stages": [stage]}))
    return path


def _start(tmp: Path) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([*ecr_command(), "pipeline", str(_pipeline(tmp))], cwd=tmp, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    pid_file = tmp / "runs" / "stage" / "pid"
    deadline = time.monotonic() + 240
    while not (pid_file.is_file() and pid_file.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, "the stage did not start"
        time.sleep(0.2)
    return proc, int(pid_file.read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def test_sigterm_to_the_pipeline_stops_its_stage_and_waits(tmp_path: Path) -> None:
    proc, stage_pid = _start(tmp_path)
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if _alive(stage_pid):
            os.kill(stage_pid, signal.SIGKILL)
    left = _alive(stage_pid)
    record_outcome(TABLE, "5. SIGTERM to the pipeline", "ecr pipeline",
                   f"rc {proc.returncode}" + (", stage left running" if left else ", stage stopped"))  # fmt: skip
    assert proc.returncode == 143, err[-2000:]
    assert (tmp_path / "runs" / "stage" / "got_sigterm").is_file()  # the stage was told, and ended
    assert not left
    assert "stopped by SIGTERM" in err and "Traceback" not in err, err[-2000:]
    assert not (tmp_path / "runs" / ".pipeline" / "work.done").exists()


def test_a_rerun_refuses_a_stage_an_orphan_is_still_writing(tmp_path: Path) -> None:
    proc, stage_pid = _start(tmp_path)
    proc.kill()  # SIGKILL: nothing can be forwarded, the stage runs on
    proc.wait(timeout=30)
    try:
        assert _alive(stage_pid)
        rerun = run_ecr(["pipeline", str(_pipeline(tmp_path))], cwd=tmp_path, timeout=120)
        still = _alive(stage_pid)
    finally:
        if _alive(stage_pid):
            os.kill(stage_pid, signal.SIGKILL)
    refused = ", refused" if str(stage_pid) in rerun.stderr else ", ran over it"
    record_outcome(TABLE, "5. rerun while an orphaned stage writes", "ecr pipeline", f"rc {rerun.returncode}{refused}")
    assert rerun.returncode == 2, rerun.stderr[-2000:]
    assert f"process {stage_pid}" in rerun.stderr and "work.lock" in rerun.stderr, rerun.stderr[-2000:]
    assert still and (tmp_path / "runs" / "stage" / "pid").read_text() == str(stage_pid)  # its folder untouched


def test_export_resolves_a_run_folder_to_its_newest_checkpoint(tmp_path: Path) -> None:
    from ecr.modules.checkpointing import resolve_checkpoint

    run = tmp_path / "tb"
    for version, names in {"version_0": ["last.ckpt"], "version_1": ["epoch=0-step=4.ckpt", "last.ckpt"],
                           "version_2": [], "version_10": []}.items():  # fmt: skip
        (run / version / "checkpoints").mkdir(parents=True)
        for name in names:
            (run / version / "checkpoints" / name).write_bytes(b"x")
    newest = run / "version_1" / "checkpoints" / "last.ckpt"
    assert resolve_checkpoint(run) == newest == resolve_checkpoint(run / "last")
    assert resolve_checkpoint(run / "version_0") == run / "version_0" / "checkpoints" / "last.ckpt"
    assert resolve_checkpoint(newest) == newest
    with pytest.raises(ConfigError, match="no .ckpt file"):
        resolve_checkpoint(run / "version_2")
    empty = tmp_path / "empty_run"
    (empty / "version_0" / "checkpoints").mkdir(parents=True)
    proc = run_ecr(["export", "--checkpoint", str(empty), "--out", str(tmp_path / "e")], cwd=tmp_path)
    assert proc.returncode == 2 and "no .ckpt file" in proc.stderr and str(empty) in proc.stderr, proc.stderr


def test_a_stage_folder_resolves_through_its_logger_folder(tmp_path: Path) -> None:
    """`ecr init` lays a stage out as `<run>/sft/tb/version_N`: `ecr export --checkpoint <run>/sft` finds it."""
    from ecr.modules.checkpointing import resolve_checkpoint

    stage = tmp_path / "sft"
    for version, names in {"version_0": ["last.ckpt"], "version_1": [], "version_2": ["last.ckpt"]}.items():
        (stage / "tb" / version / "checkpoints").mkdir(parents=True)
        for name in names:
            (stage / "tb" / version / "checkpoints" / name).write_bytes(b"x")
    (stage / "export").mkdir()  # other folders of the stage are not logger roots
    assert resolve_checkpoint(stage) == stage / "tb" / "version_2" / "checkpoints" / "last.ckpt"
    assert resolve_checkpoint(stage / "last") == resolve_checkpoint(stage / "tb")
