"""GRPO on CUDA: a bf16 step with 4-bit QLoRA (adapter-disabled reference) and one DeepSpeed step per ZeRO stage.

Skipped without CUDA (DeepSpeed refuses the CPU; CPU bitsandbytes cannot train 4-bit weights).
Run with `pytest -m gpu tests/gpu`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from ecr.data.datamodule import ClipDataModule
from ecr.fixtures import synthesize
from ecr.fixtures.tiny_models import build_tiny_omni
from ecr.models import PolicyConfig
from ecr.modules.grpo import GRPOModule
from ecr.rl.rewards import CombinedReward, FormatReward, RewardSpec
from ecr.rl.rollout import SamplingSettings

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
SMALL = {"min_pixels": 3136, "max_pixels": 3136}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_omni(tmp_path_factory.mktemp("tiny"), hidden_size=64)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    manifest = synthesize(root, num_clips=4, labels="dfew", seed=0, size=64, duration=2.0)
    rows = [dict(json.loads(line), split="train") for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _data(root: Path) -> ClipDataModule:
    return ClipDataModule(str(root), format="custom", manifest=str(root / "manifest.jsonl"), labels="dfew",
                          num_frames=4, batch_size=2, val_fraction=0.0, num_workers=0, on_error="raise")  # fmt: skip


def _letters(completions, labels) -> list[float]:
    return [sum(c.isalpha() for c in t) / max(1, len(t)) for t in completions]


def _module(tiny: Path, **policy) -> GRPOModule:
    config = PolicyConfig(model=str(tiny), dtype="bfloat16", lora={"r": 4, "dropout": 0.0}, inputs=SMALL, **policy)
    module = GRPOModule(config, sampling=SamplingSettings(max_new_tokens=8), lr=1e-3, log_completions_every_n_steps=0)
    module.reward = CombinedReward([RewardSpec("format", FormatReward()), RewardSpec("letters", _letters)])
    return module


def test_qlora_4bit_grpo_steps(tiny, clips, tmp_path):
    module = _module(tiny, quantization="4bit")
    trainer = L.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=3, logger=False,
                        enable_checkpointing=False, limit_val_batches=0, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, datamodule=_data(clips))
    assert trainer.global_step == 3 and module.nonfinite_skips == 0
    assert math.isfinite(float(trainer.callback_metrics["train/kl"]))


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_grpo_step(tiny, clips, tmp_path, stage):
    from lightning.pytorch.strategies import DeepSpeedStrategy

    module = _module(tiny)
    trainer = L.Trainer(accelerator="gpu", devices=1, strategy=DeepSpeedStrategy(stage=stage), precision="bf16-mixed",
                        max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, datamodule=_data(clips))
    assert trainer.global_step == 2 and math.isfinite(float(trainer.callback_metrics["train/loss"]))
