"""Stage 1, SFT cold start: causal-LM loss on the assistant turn `<think>…</think>\\n<answer>…</answer>`.

The module is thin: the backbone (`ecr.models`) loads the policy and scores batches; the policy-stage plumbing
it shares with GRPO — collator injection, lazy loading in `configure_model()`, optimiser/schedule injection
(default AdamW, cosine decay after `warmup_ratio` of the steps), trainable-only checkpoints — is
`ecr.modules.base.PolicyStageModule`. Precision/strategy are the Trainer's business.
"""

from __future__ import annotations

from typing import Any

import torch

from ecr.data.requirements import require_explanations
from ecr.models import PolicyConfig
from ecr.modules.base import OptimizerFactory, PolicyStageModule


class SFTModule(PolicyStageModule):
    """Supervised fine-tuning of a policy backbone on clips with explanations."""

    def __init__(
        self,
        policy: PolicyConfig,
        lr: float = 2e-5,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.03,
        scheduler: str = "cosine",
        optimizer: OptimizerFactory | None = None,
    ) -> None:
        """
        Args:
            policy: The model to train (backbone, weights, LoRA, quantisation, inputs).
            lr: Peak learning rate of the default AdamW (ignored when `optimizer` is given).
            weight_decay: Weight decay of the default AdamW (biases and norms are never decayed).
            warmup_ratio: Fraction of the optimizer steps spent in linear warmup before the schedule's decay.
            scheduler: transformers schedule name after warmup (cosine, linear, constant_with_warmup, ...).
            optimizer: Optimizer factory (e.g. `class_path: torch.optim.AdamW` with its own lr) replacing the default.
        """
        super().__init__(
            policy,
            lr=lr,
            weight_decay=weight_decay,
            warmup_ratio=warmup_ratio,
            scheduler=scheduler,
            optimizer=optimizer,
        )
        self.save_hyperparameters(self.policy_hparams())

    def setup(self, stage: str) -> None:
        """First check that every train/val row has an explanation: before the processor and the weights load."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage in ("fit", "validate") and hasattr(datamodule, "splits"):
            if datamodule.splits is None:
                datamodule.setup(stage)
            require_explanations(datamodule.splits)
        super().setup(stage)

    def _step(self, batch: dict[str, Any], split: str) -> torch.Tensor:
        loss, n_tokens = self.backbone.loss(batch)
        bs = batch["input_ids"].shape[0]
        self.log(f"{split}/loss", loss, prog_bar=True, batch_size=bs, sync_dist=split != "train")
        self.log(
            f"{split}/target_tokens",
            float(n_tokens),
            batch_size=bs,
            reduce_fx="sum",
            sync_dist=split != "train",
        )
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")  # a non-finite loss is skipped and counted by StageModule.optimizer_step

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test")
