"""The policy part of a stage module (SFT, GRPO, prediction): its config, its backbone, loading and generation.

The backbone is built from `PolicyConfig` at once (cheap: no weights), the weights are loaded in the module's
`configure_model()` (idempotent; Lightning calls it before restoring a checkpoint), on the Trainer's device.
`collate_mode` is what the stage's batches hold ("train": prompt + target; "generate": prompts only); that
collator goes to the DataModule's `collate_fn` where the pair is built (`ecr.modules.wiring.connect`), so
decoding and processing run in DataLoader workers.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule

from ecr.models import PolicyBackbone, PolicyConfig, build_backbone
from ecr.models.backbone import CollateMode


class StageCollator:
    """The stage's collator, built from the backbone on first use: pairing a module with its DataModule (and
    `--print_config`, config tests) loads no processor; the first batch, or handing the collator to DataLoader
    workers (pickling sends the built collator, never the backbone), does."""

    def __init__(self, backbone: PolicyBackbone, mode: CollateMode) -> None:
        self.mode = mode
        self._backbone: PolicyBackbone | None = backbone
        self._fn: Any = None

    def resolve(self) -> Any:
        """The backbone's collator for `mode` (built once)."""
        if self._fn is None:
            assert self._backbone is not None
            self._fn = self._backbone.collator(self.mode)
        return self._fn

    def __call__(self, samples: list[Any]) -> Any:
        return self.resolve()(samples)

    def __getstate__(self) -> dict[str, Any]:
        return {"mode": self.mode, "_fn": self.resolve(), "_backbone": None}


class StagePolicy:
    """A stage's policy: config, backbone and (once loaded) model."""

    def __init__(self, policy: PolicyConfig | dict[str, Any], collate_mode: CollateMode = "train") -> None:
        self.config = PolicyConfig.from_dict(policy)
        self.backbone: PolicyBackbone = build_backbone(self.config)
        self.collate_mode = collate_mode
        self._collator = StageCollator(self.backbone, collate_mode)

    def load(self, module: LightningModule) -> torch.nn.Module:
        """The loaded model, on the device of `module`'s Trainer (if it has one)."""
        device = module.trainer.strategy.root_device if module._trainer is not None else None
        return self.backbone.load(device)

    def collator(self) -> StageCollator:
        """The collator of the stage's batches (a picklable callable for DataLoader workers), built on first use."""
        return self._collator

    @torch.no_grad()
    def generate_texts(self, module: LightningModule, samples: list[Any], **generation_kwargs: Any) -> list[str]:
        """Generate for raw samples (prompt only) and decode; used by callbacks and evaluation."""
        batch = module.transfer_batch_to_device(self.backbone.collator("generate")(samples), module.device, 0)
        ids = self.backbone.generate(self.backbone.encode_prompt(batch), **generation_kwargs)
        return self.backbone.decode(ids)
