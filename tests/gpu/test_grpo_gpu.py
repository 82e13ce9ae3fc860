"""GRPO on CUDA: an 8-bit LoRA step (bitsandbytes), bf16 steps with 4-bit QLoRA (adapter-disabled reference), one
DeepSpeed step per ZeRO stage, and the peak memory of a step with the adapter-disabled reference vs a frozen copy.

Skipped without CUDA (DeepSpeed refuses the CPU; CPU bitsandbytes cannot train 4-bit weights). Clips are
pre-decoded tensors (conftest.py). Run with `pytest -m gpu tests/gpu` (scripts/gpu_check.sh on a bare GPU image).
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest

from ecr.modules.grpo import GRPOModule
from ecr.modules.wiring import connect
from ecr.rl.rewards import CombinedReward, FormatReward, RewardSpec
from ecr.rl.scorer import SamplingSettings

pytestmark = pytest.mark.gpu
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _letters(completions, labels) -> list[float]:
    return [sum(c.isalpha() for c in t) / max(1, len(t)) for t in completions]


def _fit(policy_config, data, trainer_kwargs, steps: int, **trainer) -> tuple[GRPOModule, L.Trainer]:
    module = GRPOModule(policy_config, sampling=SamplingSettings(max_new_tokens=8), optimization={"lr": 1e-3},
                        grpo={"log_completions_every_n_steps": 0})  # fmt: skip
    module.reward = CombinedReward([RewardSpec("format", FormatReward()), RewardSpec("letters", _letters)])
    fit = L.Trainer(**{**trainer_kwargs, **trainer}, max_steps=steps, limit_val_batches=0)
    fit.fit(module, datamodule=connect(module, data))
    assert fit.global_step == steps and math.isfinite(float(fit.callback_metrics["train/loss"]))
    return module, fit


def test_8bit_lora_grpo_step(policy, data, trainer_kwargs):
    module, trainer = _fit(policy(quantization="8bit"), data, trainer_kwargs, steps=2)
    assert module.nonfinite_skips == 0 and math.isfinite(float(trainer.callback_metrics["train/kl"]))


def test_qlora_4bit_grpo_steps(cuda, policy, data, trainer_kwargs):
    module, trainer = _fit(policy(quantization="4bit"), data, trainer_kwargs, steps=3)
    assert module.nonfinite_skips == 0 and math.isfinite(float(trainer.callback_metrics["train/kl"]))


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_grpo_step(cuda, policy, data, trainer_kwargs, stage):
    from lightning.pytorch.strategies import DeepSpeedStrategy

    _fit(policy(), data, trainer_kwargs, steps=2, strategy=DeepSpeedStrategy(stage=stage))


def test_adapter_disabled_reference_costs_less_memory_than_a_copy(cuda):
    """benchmarks/bench_grpo_memory.py on CUDA (each mode in its own process): the adapter-disabled reference
    holds no second copy of the weights, so its step peaks below the frozen-copy reference's."""
    cmd = [sys.executable, str(BENCHMARKS / "bench_grpo_memory.py"), "--device", "cuda", "--hidden", "512",
           "--layers", "8"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=BENCHMARKS)
    assert out.returncode == 0, out.stderr[-3000:]
    print(out.stdout)
    peak = {m: float(v) for m, v in re.findall(r"^(policy|adapter|copy)\s+([\d.]+)", out.stdout, re.MULTILINE)}
    assert set(peak) == {"policy", "adapter", "copy"}, out.stdout
    assert peak["adapter"] < peak["copy"], peak
