"""SFT on CUDA: a bf16 LoRA step, an 8-bit LoRA step (bitsandbytes), a 4-bit QLoRA fit (train -> validate ->
train) and one step per DeepSpeed ZeRO stage through Lightning's DeepSpeedStrategy on one GPU.

Skipped without CUDA: Lightning refuses DeepSpeed on CPU and CPU bitsandbytes cannot train 4-bit weights after
an inference forward (docs/method.md §7). Clips are pre-decoded tensors (conftest.py), so no FFmpeg is needed.
Run with `pytest -m gpu tests/gpu` (scripts/gpu_check.sh on a bare GPU image).
"""

from __future__ import annotations

import lightning as L
import pytest
import torch

from ecr.modules.sft import SFTModule
from ecr.modules.wiring import connect

pytestmark = pytest.mark.gpu


def _trainable(module: SFTModule) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().cpu().clone() for n, p in module.named_parameters() if p.requires_grad}


class Snapshot(L.Callback):
    """The trainable tensors when fit starts (after configure_model placed the weights)."""

    def on_fit_start(self, trainer, pl_module) -> None:
        self.before = _trainable(pl_module)


def _fit(policy, data, trainer_kwargs, **trainer) -> tuple[SFTModule, L.Trainer, Snapshot]:
    module = SFTModule(policy, optimization={"lr": 1e-3, "warmup_ratio": 0.0})
    snapshot = Snapshot()
    fit = L.Trainer(**{**trainer_kwargs, **trainer}, callbacks=[snapshot])
    fit.fit(module, datamodule=connect(module, data))
    return module, fit, snapshot


def _adapters_moved(module: SFTModule, snapshot: Snapshot) -> bool:
    after = _trainable(module)
    return any(not torch.equal(snapshot.before[k], after[k]) for k in snapshot.before if "lora_B" in k)


def test_bf16_lora_sft_step(policy, data, trainer_kwargs):
    module, trainer, snapshot = _fit(policy(), data, trainer_kwargs, max_steps=2, limit_val_batches=0)
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train/loss"])
    assert _adapters_moved(module, snapshot)


def test_8bit_lora_sft_step(policy, data, trainer_kwargs):
    module, trainer, snapshot = _fit(policy(quantization="8bit"), data, trainer_kwargs, max_steps=2,
                                     limit_val_batches=0)  # fmt: skip
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train/loss"])
    assert _adapters_moved(module, snapshot)


def test_qlora_4bit_fit_with_validation(cuda, policy, data, trainer_kwargs):
    module, trainer, snapshot = _fit(policy(quantization="4bit"), data, trainer_kwargs, max_epochs=2,
                                     num_sanity_val_steps=1)  # fmt: skip
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    assert _adapters_moved(module, snapshot)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_step(cuda, policy, data, trainer_kwargs, stage):
    from lightning.pytorch.strategies import DeepSpeedStrategy

    _, trainer, _ = _fit(policy(), data, trainer_kwargs, strategy=DeepSpeedStrategy(stage=stage), max_steps=2,
                         limit_val_batches=0)  # fmt: skip
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train/loss"])
