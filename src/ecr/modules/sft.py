"""Stage 1, SFT cold start: causal-LM loss on the assistant turn `<think>…</think>\\n<answer>…</answer>`.

The module is thin: the backbone (`ecr.models`) loads the policy and scores batches; the module wires it into
Lightning.
- `__init__` is cheap (no weights, no processor): `--print_config`, config tests and hparams stay light.
- `setup()` builds the collators and hands the training one to the datamodule (`datamodule.collate_fn`), so
  decoding + processing run in DataLoader workers.
- `configure_model()` loads the weights (idempotent); Lightning calls it before restoring a checkpoint.
- Checkpoints hold only trainable tensors (LoRA adapters, unfrozen modules) + optimizer/scheduler state;
  `load_state_dict` checks that exactly those tensors are present, so a partial checkpoint cannot load silently.
- Optimiser: injectable (`optimizer:` in YAML, default AdamW(lr, weight_decay)); schedule: linear warmup over
  `warmup_ratio` of `trainer.estimated_stepping_batches`, then cosine decay. Precision/strategy are the
  Trainer's business.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from lightning.pytorch import LightningModule

from ecr.errors import ConfigError
from ecr.models.config import PolicyConfig
from ecr.models.registry import build_backbone

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


class SFTModule(LightningModule):
    """Supervised fine-tuning of a policy backbone on clips with explanations."""

    def __init__(
        self,
        policy: PolicyConfig,
        lr: float = 2e-5,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.03,
        optimizer: OptimizerFactory | None = None,
    ) -> None:
        """
        Args:
            policy: The model to train (backbone, weights, LoRA, quantisation, inputs).
            lr: Peak learning rate of the default AdamW (ignored when `optimizer` is given).
            weight_decay: Weight decay of the default AdamW.
            warmup_ratio: Fraction of the optimizer steps spent in linear warmup before cosine decay.
            optimizer: Optimizer factory (e.g. `class_path: torch.optim.AdamW` with its own lr) replacing the default.
        """
        super().__init__()
        self.policy_config = PolicyConfig.from_dict(policy)
        if not 0.0 <= warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
        self.lr, self.weight_decay, self.warmup_ratio = lr, weight_decay, warmup_ratio
        self.optimizer_factory = optimizer
        # Plain dicts only: checkpoints must load with torch.load(weights_only=True).
        self.save_hyperparameters(
            {
                "policy": self.policy_config.to_dict(),
                "lr": lr,
                "weight_decay": weight_decay,
                "warmup_ratio": warmup_ratio,
            }
        )
        self.backbone = build_backbone(self.policy_config)
        self.model: torch.nn.Module | None = None
        self.collator: Any = None
        self.generation_collator: Any = None

    # ------------------------------------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        self.collator = self.backbone.collator("train")
        self.generation_collator = self.backbone.collator("generate")
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            if not hasattr(datamodule, "collate_fn"):
                raise ConfigError(f"{type(datamodule).__name__} has no `collate_fn` attribute for the SFT collator")
            datamodule.collate_fn = self.collator

    def configure_model(self) -> None:
        if self.model is not None:
            return
        device = self.trainer.strategy.root_device if self._trainer is not None else None
        self.model = self.backbone.load(device)

    # ---------------------------------------------------------------------------------------- training
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
        loss = self._step(batch, "train")
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss {loss.item()} at step {self.global_step}")
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test")

    @torch.no_grad()
    def generate_texts(self, samples: list[Any], **generation_kwargs: Any) -> list[str]:
        """Generate for raw samples (prompt only) and decode; used by callbacks and evaluation."""
        batch = self.generation_collator(samples)
        batch = self.transfer_batch_to_device(batch, self.device, 0)
        prompt = self.backbone.encode_prompt(batch)
        ids = self.backbone.generate(prompt, **generation_kwargs)
        return self.backbone.decode(ids)

    # -------------------------------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> dict[str, Any]:
        from transformers import get_cosine_schedule_with_warmup

        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("no trainable parameters: check policy.lora and the freeze settings")
        if self.optimizer_factory is not None:
            optimizer = self.optimizer_factory(params)
        else:
            optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(round(self.warmup_ratio * total))
        scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"},
        }

    # ------------------------------------------------------------------------------------ checkpoints
    def trainable_keys(self) -> set[str]:
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only the trained tensors: the frozen base weights come from `policy.model` at load time."""
        keep = self.trainable_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False):  # type: ignore[override]
        """Load a trainable-only state dict; strict = every trainable tensor present and nothing unknown."""
        if self.model is None:  # e.g. ddp_spawn handing rank 0's weights back to the main process
            self.configure_model()
        expected = self.trainable_keys()
        missing = sorted(expected - set(state_dict))
        unexpected = sorted(set(state_dict) - set(super().state_dict()))
        if strict and (missing or unexpected):
            raise ConfigError(
                f"checkpoint does not match the policy's trainable tensors: missing {missing[:5]} "
                f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)}); was it trained with the "
                "same policy.lora / freeze settings?"
            )
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        return type(result)(missing_keys=missing, unexpected_keys=unexpected)
