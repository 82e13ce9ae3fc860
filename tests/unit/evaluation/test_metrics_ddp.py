"""The metrics across 2 processes (gloo, CPU): each rank sees part of the clips, and the synced numbers equal the
single-process numbers on all of them (the states are counts reduced with `dist_reduce_fx="sum"`)."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ecr.labels import DFEW_LABELS
from ecr.metrics import ExplanationMetrics, RecognitionMetrics

WORKER = Path(__file__).with_name("metrics_ddp_worker.py")


def _worker_module():
    spec = importlib.util.spec_from_file_location("metrics_ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.slow
def test_metrics_sync_across_two_processes(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outs = [tmp_path / f"rank{r}.json" for r in range(2)]
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(r), str(port), str(outs[r])]) for r in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    worker = _worker_module()
    pred, expl, target = worker.data()
    rec, exp = RecognitionMetrics(DFEW_LABELS), ExplanationMetrics()
    rec.update(pred, target)
    exp.update(pred, expl, target)
    single = worker.results(rec, exp)
    synced = [json.loads(o.read_text()) for o in outs]
    assert synced[0] == synced[1]
    assert synced[0].pop("confusion") == single.pop("confusion")
    assert synced[0] == pytest.approx(single)
