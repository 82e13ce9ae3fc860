"""Helpers of the fault-injection suite, importable by `ecr` subprocesses (`PYTHONPATH` = this folder).

- `ToyStage`: the smallest real `StageModule` (its optimiser, schedule and checkpoint plumbing), a linear
  classifier over character counts of a `TextDataModule` row; it saves its hyper-parameters as an explicit
  dict, like the policy stages, so its checkpoints carry no LightningCLI `_class_path` of their own.
- `Record`: appends one JSON line per optimizer step (step, batch ids, loss, lr) to a file.
- `KillAt`: sends a signal to its own process when a given step is about to start (after the checkpoint of
  the previous step was written), i.e. `kill -9` / SIGTERM between two steps.
- `run_ecr`: the `ecr` console script in a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ecr.modules.base import StageModule
from ecr.modules.optim import OptimizationSettings, OptimizerFactory

HERE = Path(__file__).resolve().parent
FEATURES = 16


def features(texts: list[str]) -> torch.Tensor:
    """Character counts modulo FEATURES, float [B, FEATURES]."""
    out = torch.zeros(len(texts), FEATURES)
    for i, t in enumerate(texts):
        for c in t:
            out[i, ord(c) % FEATURES] += 1.0
    return out / max(1, max(len(t) for t in texts))


TOY_OPTIMIZATION = OptimizationSettings(lr=0.1, weight_decay=0.0, warmup_ratio=0.25, scheduler="linear")


class ToyStage(StageModule):
    """A linear text classifier trained through the shared stage plumbing."""

    def __init__(
        self,
        num_labels: int = 7,
        optimization: OptimizationSettings = TOY_OPTIMIZATION,
        optimizer: OptimizerFactory | None = None,
    ) -> None:
        super().__init__(OptimizationSettings.of(optimization, TOY_OPTIMIZATION), optimizer)
        self.save_hyperparameters({"num_labels": num_labels, **self.optimization_hparams()})
        self.head = torch.nn.Linear(FEATURES, num_labels)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self.head(features(batch["texts"]))
        return torch.nn.functional.cross_entropy(logits, batch["label_ids"])


def vowel_share(completions: list[str], labels: list[str]) -> list[float]:
    """A dense GRPO reward (the share of vowels among a completion's letters): it varies with every sample, so
    a resumed run whose sampling RNG differs would log different rewards."""
    out = []
    for text in completions:
        letters = [c for c in text.lower() if c.isalpha()]
        out.append(sum(c in "aeiou" for c in letters) / max(1, len(letters)))
    return out


def vowels_unless_calm(completions: list[str], labels: list[str]) -> list[float]:
    """`vowel_share`, but 0.5 for every completion of a happy, sad or neutral clip: their groups have no reward
    spread, so dynamic sampling draws again for them."""
    dense = vowel_share(completions, labels)
    return [0.5 if label in ("happy", "sad", "neutral") else v for v, label in zip(dense, labels, strict=True)]


class Record(L.Callback):
    """One JSON line per optimizer step: {"step", "ids", "loss", "lr"} and, with dynamic sampling, "rounds" (the
    prompt batches drawn; "ids" are then the last one's) (flushed, so a kill loses nothing)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        meta = batch.get("meta", {}) if isinstance(batch, dict) else {}
        ids = batch.get("ids") or meta.get("ids") or batch.get("text")
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:  # manual optimisation (GRPO) returns nothing: its sampled mean reward stands in
            loss = trainer.callback_metrics["train/reward"]
        row = {
            "step": trainer.global_step,
            "ids": list(ids),
            "loss": float(loss),
            "lr": float(trainer.optimizers[0].param_groups[0]["lr"]),
        }
        if "train/dynamic/rounds" in trainer.callback_metrics:
            row["rounds"] = int(trainer.callback_metrics["train/dynamic/rounds"])
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


class KillAt(L.Callback):
    """Send `signal` (a name: "SIGKILL", "SIGTERM") to this process when optimizer step `step` + 1 begins."""

    def __init__(self, step: int, signal: str = "SIGKILL") -> None:
        self.step = step
        self.signal = signal

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(signal, self.signal))


def ecr_command() -> list[str]:
    """The installed `ecr` console script (the entry point users run)."""
    script = Path(sys.executable).with_name("ecr")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ecr.cli"]


def run_ecr(args: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None):
    """Run `ecr ARGS` in `cwd`; returns the CompletedProcess (text output)."""
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    return subprocess.run(
        ecr_command() + args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


class BuggyStage(ToyStage):
    """A stage with a programming error in `setup` (not an `ECRError`): its traceback must stay visible."""

    def setup(self, stage: str) -> None:
        raise RuntimeError("deliberate bug in BuggyStage.setup")


# --------------------------------------------------------------------------------------- summary table
SUMMARY: dict[str, dict[str, list[tuple[str, str]]]] = {}  # table -> {input kind: [(path, outcome)]}


def record_outcome(table: str, kind: str, path: str, outcome: str) -> None:
    """Remember `kind` -> `outcome` through `path` ("data check", "fit skip", ...) for the end-of-run table."""
    SUMMARY.setdefault(table, {}).setdefault(kind, []).append((path, outcome))


def summary_lines() -> list[str]:
    lines: list[str] = []
    for table, rows in SUMMARY.items():
        paths = list(dict.fromkeys(p for outcomes in rows.values() for p, _ in outcomes))
        width = max(len(k) for k in rows)
        lines += ["", f"{table}:", f"  {'input':<{width}}  " + " | ".join(paths)]
        for kind, outcomes in rows.items():
            got = dict(outcomes)
            lines.append(f"  {kind:<{width}}  " + " | ".join(got.get(p, "-") for p in paths))
    return lines


class NaNAt(ToyStage):
    """`ToyStage` whose loss is NaN at the given optimizer steps (1-based), e.g. a corrupt batch."""

    def __init__(self, steps: list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nan_steps = set(steps)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step + 1 in self.nan_steps else loss


class BlowUpAt(ToyStage):
    """`ToyStage` whose gradient at optimizer step `step` is finite but ~1e38: an SGD step overflows the weights."""

    def __init__(self, step: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.blow_up_step = step

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        if self.global_step + 1 == self.blow_up_step:
            loss = loss + self.head.weight.sum() * 1e38
        return loss


class OSErrorBugStage(ToyStage):
    """A stage whose `setup` fails opening a file the program chose itself (not on the command line): an OSError
    that is a bug, so its traceback must stay visible."""

    def setup(self, stage: str) -> None:
        open(os.path.join(os.path.dirname(__file__), "no-such-internal-file.bin"), "rb").close()
