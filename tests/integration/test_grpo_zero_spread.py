"""Issue 18.7: a GRPO run whose rewards never differ within a group says so on the console."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import pytest

from ecr.fixtures import build_tiny_causal_lm, synthesize, write_text_manifest
from ecr.models import PolicyConfig
from ecr.modules.grpo import GRPOModule
from ecr.modules.wiring import connect
from ecr.rl.rewards import CombinedReward, RewardSpec
from ecr.rl.scorer import SamplingSettings
from ecr.rl.spread import ZeroSpreadMonitor


def constant(completions: Sequence[str], labels: Sequence[str]) -> list[float]:
    return [1.0] * len(completions)


def test_constant_reward_warns_with_the_likely_causes(tmp_path: Path) -> None:
    from ecr.data import TextDataModule

    lm = build_tiny_causal_lm(tmp_path / "lm", hidden_size=64)
    text = write_text_manifest(
        synthesize(tmp_path / "synth", num_clips=3, labels="dfew", seed=4, size=32, duration=0.5)
    )
    text.write_text(
        "".join(json.dumps(dict(json.loads(x), split="train")) + "\n" for x in text.read_text().splitlines())
    )
    L.seed_everything(0)
    policy = PolicyConfig(backbone="causal_lm", model=str(lm), lora={"r": 4, "dropout": 0.0})
    module = GRPOModule(
        policy, sampling=SamplingSettings(max_new_tokens=4), rewards=[{"name": "format"}], optimization={"lr": 1e-3}
    )
    module.reward = CombinedReward([RewardSpec("constant", constant)])
    module.zero_spread = ZeroSpreadMonitor(patience=2)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=tmp_path,
    )  # fmt: skip
    with pytest.warns(UserWarning, match=r"for 2 steps in a row every group's rewards had zero spread") as caught:
        trainer.fit(
            module, datamodule=connect(module, TextDataModule(text, labels="dfew", val_fraction=0.0, batch_size=3))
        )
    assert len([w for w in caught if "zero spread" in str(w.message)]) == 1
