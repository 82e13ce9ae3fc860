"""Stage 1, SFT cold start: causal-LM loss on the assistant turn `<think>…</think>\\n<answer>…</answer>`.

The module is thin: the backbone (`ecr.models`) loads the policy and scores batches; the parts it shares with
GRPO are the policy (`ecr.modules.policy.StagePolicy`: collator, lazy loading in `configure_model()`) and the
training-stage glue (`ecr.modules.base.StageModule`: optimiser/schedule injection — default AdamW, cosine decay
after `warmup_ratio` of the steps — the non-finite guard, trainable-only checkpoints). Precision/strategy are
the Trainer's business.
"""

from __future__ import annotations

from typing import Any

import torch

from ecr.data.requirements import require_explanations
from ecr.models import PolicyConfig
from ecr.modules.base import StageModule
from ecr.modules.optim import OptimizationSettings, OptimizerFactory
from ecr.modules.policy import StagePolicy

SFT_OPTIMIZATION = OptimizationSettings(lr=2e-5, weight_decay=0.0, warmup_ratio=0.03, scheduler="cosine")


class SFTModule(StageModule):
    """Supervised fine-tuning of a policy backbone on clips with explanations."""

    def __init__(
        self,
        policy: PolicyConfig,
        optimization: OptimizationSettings = SFT_OPTIMIZATION,
        optimizer: OptimizerFactory | None = None,
    ) -> None:
        """
        Args:
            policy: The model to train (backbone, weights, LoRA, quantisation, inputs).
            optimization: Learning rate, weight decay, warmup and schedule of the default AdamW.
            optimizer: Optimizer factory (e.g. `class_path: torch.optim.AdamW` with its own lr) replacing the default.
        """
        super().__init__(OptimizationSettings.of(optimization, SFT_OPTIMIZATION), optimizer)
        self.policy = StagePolicy(policy)
        self.policy_config, self.backbone = self.policy.config, self.policy.backbone
        self.model: torch.nn.Module | None = None
        self.save_hyperparameters({"policy": self.policy_config.to_dict(), **self.optimization_hparams()})

    @property
    def collator(self) -> Any:
        return self.policy.collator()

    def setup(self, stage: str) -> None:
        """First check that every train/val row has an explanation: before the processor and the weights load."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage in ("fit", "validate") and datamodule is not None and hasattr(datamodule, "splits"):
            if datamodule.splits is None:
                datamodule.setup(stage)
            require_explanations(datamodule.splits)

    def configure_model(self) -> None:
        if self.model is None:
            self.model = self.policy.load(self)

    def generate_texts(self, samples: list[Any], **generation_kwargs: Any) -> list[str]:
        """Generate for raw samples (prompt only) and decode; used by callbacks and evaluation."""
        return self.policy.generate_texts(self, samples, **generation_kwargs)

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
