"""The tiny-model recipe of the fit tests: the tiny Omni, real synthetic clips (or their pre-decoded tensors), a
ClipDataModule over them, a CPU Trainer with nothing the test does not ask for, and a loss recorder. Written once
(the fit tests of SFT, GRPO, prediction and HumanOmni and the GPU tests used to carry their own copies)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L

from ecr.data import ClipDataModule
from ecr.fixtures import build_tiny_omni, synth_samples, synthesize

SMALL = {"min_pixels": 3136, "max_pixels": 3136}  # one 56×56 frame patch grid: the smallest Omni video input


def tiny_omni(folder: Path) -> Path:
    """The tiny random Qwen2.5-Omni thinker (hidden size 64) every policy fit starts from, written to `folder`."""
    return build_tiny_omni(folder, hidden_size=64)


def decoded_clips(num_clips: int, seed: int = 0, duration: float = 2.0) -> list[dict[str, Any]]:
    """`num_clips` synthetic DFEW clips as pre-decoded ClipSample dicts (4 frames of 64 x 64, 16 kHz mono): no
    FFmpeg or torchcodec needed (`ecr.fixtures.synth_samples`)."""
    return synth_samples(num_clips, labels="dfew", seed=seed, num_frames=4, size=64, duration=duration)


def synth_clips(root: Path, num_clips: int, split: str, seed: int = 3) -> Path:
    """`num_clips` real DFEW-labelled clips under `root`, every manifest row in `split`; returns `root`."""
    manifest = synthesize(root, num_clips=num_clips, labels="dfew", seed=seed, size=64, duration=2.0)
    rows = [dict(json.loads(line), split=split) for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def clip_data(root: Path, batch_size: int = 2, manifest: str = "manifest.jsonl", **kw: Any) -> ClipDataModule:
    """The clips of `root/manifest` (4 frames, no validation split, errors raised, no worker processes)."""
    # Path arguments are fine: the DataModule stores strings in its hparams (weights_only checkpoints)
    return ClipDataModule(
        root, format="custom", manifest=root / manifest, labels="dfew", num_frames=4, batch_size=batch_size,
        val_fraction=0.0, num_workers=0, on_error="raise", **kw,
    )  # fmt: skip


def cpu_trainer(tmp: Path, **kw: Any) -> L.Trainer:
    """A one-CPU, fp32 Trainer without validation, progress bar, summary, logger or checkpoints (unless given)."""
    kw.setdefault("logger", False)
    kw.setdefault("enable_checkpointing", False)
    return L.Trainer(
        accelerator="cpu", devices=1, precision="32-true", limit_val_batches=0, num_sanity_val_steps=0,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp, **kw,
    )  # fmt: skip


class LossHistory(L.Callback):
    """The training loss of every batch."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        self.losses.append(float(outputs["loss"]))
