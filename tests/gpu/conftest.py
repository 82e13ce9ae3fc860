"""Fixtures of the GPU tests: a tiny random Omni, pre-decoded synthetic clips and a DataModule over them.

The clips are `ecr.fixtures.synth_samples` (`support.tiny.decoded_clips`): the synthetic dataset's frames and
audio as tensors, so the tests need neither FFmpeg nor torchcodec (a bare GPU image has neither;
scripts/gpu_check.sh); the model is `support.tiny.tiny_omni`, as in the fit tests. Every test module here
is marked `gpu` and skips without CUDA; `ECR_GPU_TESTS_ON_CPU=1` runs the ones that do not need CUDA itself
(not DeepSpeed, not 4-bit training) on the CPU, to check the tests' own code where there is no GPU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningDataModule
from support.tiny import SMALL, decoded_clips, tiny_omni
from torch.utils.data import DataLoader

ON_CPU = os.environ.get("ECR_GPU_TESTS_ON_CPU", "").strip() not in ("", "0")
HAS_CUDA = torch.cuda.is_available()


@pytest.fixture
def device() -> str:
    """ "cuda"; "cpu" with ECR_GPU_TESTS_ON_CPU=1 and no GPU; else the test skips."""
    if not (HAS_CUDA or ON_CPU):
        pytest.skip("needs a CUDA device (ECR_GPU_TESTS_ON_CPU=1 runs this test on the CPU)")
    return "cuda" if HAS_CUDA else "cpu"


@pytest.fixture
def cuda() -> str:
    """ "cuda", or the test skips: DeepSpeed and 4-bit training run on CUDA only (docs/method.md §7)."""
    if not HAS_CUDA:
        pytest.skip("needs a CUDA device")
    return "cuda"


@pytest.fixture
def trainer_kwargs(device: str, tmp_path: Path) -> dict[str, Any]:
    """What every Trainer here shares: one device, bf16-mixed, no logger or checkpoints, a tmp root."""
    return {"accelerator": "gpu" if device == "cuda" else "cpu", "devices": 1, "precision": "bf16-mixed",
            "logger": False, "enable_checkpointing": False, "default_root_dir": tmp_path}  # fmt: skip


class SampleDataModule(LightningDataModule):
    """Train/val loaders over a list of pre-decoded ClipSample dicts, with the stage's collator plugged in."""

    def __init__(self, samples: list[dict[str, Any]], batch_size: int = 2, val: int = 1) -> None:
        from ecr.labels import get_label_set

        super().__init__()
        self.label_set = get_label_set("dfew")  # the labels synth_samples draws
        self.train, self.val = samples[: len(samples) - val], samples[len(samples) - val :]
        self.batch_size = batch_size
        self.collate_fn: Any = None  # set by `ecr.modules.wiring.connect`

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=False, collate_fn=self.collate_fn)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=self.batch_size, shuffle=False, collate_fn=self.collate_fn)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_omni(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def samples() -> list[dict[str, Any]]:
    """Five pre-decoded synthetic clips (2 s, 4 frames of 64 x 64, 16 kHz mono)."""
    return decoded_clips(5)


@pytest.fixture
def data(samples: list[dict[str, Any]]) -> SampleDataModule:
    return SampleDataModule(samples)


@pytest.fixture
def policy(tiny: Path) -> Any:
    """`policy(**overrides)` -> the tiny Omni's PolicyConfig: bf16, LoRA r=4 without dropout, 56 x 56 frames."""
    from ecr.models import PolicyConfig

    def make(**overrides: Any) -> PolicyConfig:
        kw = {"model": str(tiny), "dtype": "bfloat16", "lora": {"r": 4, "dropout": 0.0}, "inputs": SMALL}
        return PolicyConfig(**{**kw, **overrides})

    return make
