"""SFT on CUDA: one DeepSpeed step per ZeRO stage and a 4-bit QLoRA fit (train -> validate -> train).

Skipped without CUDA: Lightning refuses DeepSpeed on CPU and CPU bitsandbytes cannot train 4-bit weights
after an inference forward (docs/method.md §7). Run with `pytest -m gpu tests/gpu`.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from ecr.data.datamodule import ClipDataModule
from ecr.fixtures import synthesize
from ecr.fixtures.tiny_models import build_tiny_omni
from ecr.models import PolicyConfig
from ecr.modules.sft import SFTModule

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
    rows = [
        dict(json.loads(line), split="train" if i < 3 else "val")
        for i, line in enumerate(manifest.read_text().splitlines())
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _data(root: Path) -> ClipDataModule:
    return ClipDataModule(str(root), format="custom", manifest=str(root / "manifest.jsonl"), labels="dfew",
                          num_frames=4, batch_size=2, shuffle=False, num_workers=0, on_error="raise")  # fmt: skip


def _lora_params(module: SFTModule) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().cpu().clone() for n, p in module.named_parameters() if p.requires_grad}


class Snapshot(L.Callback):
    def on_fit_start(self, trainer, pl_module) -> None:
        self.before = _lora_params(pl_module)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_step(tiny, clips, tmp_path, stage):
    from lightning.pytorch.strategies import DeepSpeedStrategy

    policy = PolicyConfig(model=str(tiny), dtype="bfloat16", lora={"r": 4, "dropout": 0.0}, inputs=SMALL)
    module = SFTModule(policy, lr=1e-3, warmup_ratio=0.0)
    trainer = L.Trainer(accelerator="gpu", devices=1, strategy=DeepSpeedStrategy(stage=stage), precision="bf16-mixed",
                        max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, datamodule=_data(clips))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_qlora_4bit_fit_with_validation(tiny, clips, tmp_path):
    policy = PolicyConfig(
        model=str(tiny), dtype="bfloat16", quantization="4bit", lora={"r": 4, "dropout": 0.0}, inputs=SMALL
    )
    module = SFTModule(policy, lr=1e-3, warmup_ratio=0.0)
    snapshot = Snapshot()  # configure_model() loads the 4-bit weights straight onto the GPU
    trainer = L.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_epochs=2, logger=False,
                        enable_checkpointing=False, num_sanity_val_steps=1, default_root_dir=tmp_path,
                        callbacks=[snapshot])  # fmt: skip
    trainer.fit(module, datamodule=_data(clips))
    before, after = snapshot.before, _lora_params(module)
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    assert any(not torch.equal(before[k], after[k]) for k in before if "lora_B" in k)
