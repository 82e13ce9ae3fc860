"""The policy part of a stage module (SFT, GRPO, prediction): its config, its backbone, loading and generation.

The backbone is built from `PolicyConfig` at once (cheap: no weights), the weights are loaded in the module's
`configure_model()` (idempotent; Lightning calls it before restoring a checkpoint), on the Trainer's device.
`collate_mode` is what the stage's batches hold ("train": prompt + target; "generate": prompts only); that
collator goes to the DataModule's `collate_fn` (`wire`), so decoding and processing run in DataLoader workers.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule

from ecr.errors import ConfigError
from ecr.models import PolicyBackbone, PolicyConfig, build_backbone
from ecr.models.backbone import CollateMode


class StagePolicy:
    """A stage's policy: config, backbone and (once loaded) model."""

    def __init__(self, policy: PolicyConfig | dict[str, Any], collate_mode: CollateMode = "train") -> None:
        self.config = PolicyConfig.from_dict(policy)
        self.backbone: PolicyBackbone = build_backbone(self.config)
        self.collate_mode = collate_mode

    def load(self, module: LightningModule) -> torch.nn.Module:
        """The loaded model, on the device of `module`'s Trainer (if it has one)."""
        device = module.trainer.strategy.root_device if module._trainer is not None else None
        return self.backbone.load(device)

    def collator(self) -> Any:
        """The collator of the stage's batches (a picklable callable for DataLoader workers)."""
        return self.backbone.collator(self.collate_mode)

    def wire(self, module: LightningModule) -> None:
        """Hand the stage's collator to the Trainer's DataModule (its `collate_fn`)."""
        datamodule = getattr(module.trainer, "datamodule", None) if module._trainer is not None else None
        if datamodule is not None:
            if not hasattr(datamodule, "collate_fn"):
                raise ConfigError(f"{type(datamodule).__name__} has no `collate_fn` attribute for the stage's collator")
            datamodule.collate_fn = self.collator()

    @torch.no_grad()
    def generate_texts(self, module: LightningModule, samples: list[Any], **generation_kwargs: Any) -> list[str]:
        """Generate for raw samples (prompt only) and decode; used by callbacks and evaluation."""
        batch = module.transfer_batch_to_device(self.backbone.collator("generate")(samples), module.device, 0)
        ids = self.backbone.generate(self.backbone.encode_prompt(batch), **generation_kwargs)
        return self.backbone.decode(ids)
