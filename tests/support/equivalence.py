"""One GRPO optimizer step in a subprocess (tests/integration/grpo_equivalence_worker.py) and the comparison of
two such steps: the equivalence tests of accumulation, DDP, group filtering and dynamic sampling share them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

WORKER = Path(__file__).resolve().parents[1] / "integration" / "grpo_equivalence_worker.py"


def one_step(tiny: Path, clips: Path, out: Path, **kw: Any) -> dict[str, dict[str, torch.Tensor]]:
    """The trainable tensors before and after one step of the worker run with `kw` as its options."""
    args = [sys.executable, str(WORKER), str(tiny), str(clips), str(out)]
    args += [f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}") for k, v in kw.items()]  # True: a flag
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out, weights_only=True)


def assert_same_update(a: dict, b: dict) -> None:
    """Both runs started from the same adapters and moved them by the same amount (and they did move)."""
    assert a["after"].keys() == b["after"].keys()
    assert all(torch.equal(a["before"][n], b["before"][n]) for n in a["before"])
    deltas = {n: (a["after"][n] - a["before"][n], b["after"][n] - b["before"][n]) for n in a["after"]}
    assert any(d.abs().max() > 1e-4 for d, _ in deltas.values()), "the step changed nothing"
    for n, (da, db) in deltas.items():
        assert torch.allclose(da, db, atol=1e-7, rtol=1e-4), (n, (da - db).abs().max())
