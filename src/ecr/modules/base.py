"""The Lightning glue of the training stages (ERV, SFT, GRPO), built from small parts.

`StageModule` wires Lightning's hooks to the parts every training stage uses, so a new stage adds only its steps:
- optimisation (`ecr.modules.optim`): `OptimizationSettings` + an optional injected optimizer factory, the
  decay/no-decay split and the named schedule; the `DivergenceGuard` that skips non-finite steps
  (`train/nonfinite_skips`) and stops a diverging run before a checkpoint can hold its weights;
- checkpoints (`ecr.modules.checkpointing`): only the trained tensors, with the module's class named; on resume
  the early-built train loader is released so its saved position is restored.
The policy plumbing of SFT and GRPO (the backbone from `PolicyConfig`, loading in `configure_model`, the
collator the CLI hands to the DataModule) is `ecr.modules.policy.StagePolicy`; prediction
(`ecr.modules.predict.PredictModule`) trains nothing and is a plain `LightningModule`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import LightningModule

from ecr.modules.checkpointing import check_trainable, keep_trainable, release_early_train_loader, trainable_keys
from ecr.modules.optim import (
    DivergenceGuard,
    OptimizationSettings,
    OptimizerFactory,
    all_finite,
    configure_optimization,
)

if TYPE_CHECKING:
    from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
    from torch.nn.modules.module import _IncompatibleKeys


class StageModule(LightningModule):
    """Optimiser/schedule injection, the non-finite guard and trainable-only checkpoints (see module docstring)."""

    def __init__(self, optimization: OptimizationSettings, optimizer: OptimizerFactory | None) -> None:
        super().__init__()
        self.optimization = optimization
        self.optimizer_factory = optimizer
        self.guard = DivergenceGuard()

    @property
    def nonfinite_skips(self) -> int:
        """Steps skipped for a non-finite loss or gradient, over the whole fit."""
        return self.guard.nonfinite_skips

    def optimization_hparams(self) -> dict[str, Any]:
        """The optimisation settings as plain hyper-parameters (the factory itself is not checkpoint-safe)."""
        return {"optimization": asdict(self.optimization)}

    # -------------------------------------------------------------------------------------- optimiser
    def total_optimizer_steps(self) -> int:
        """Optimizer steps of the whole fit (the schedule's length); a stage with manual optimisation overrides it."""
        return max(1, int(self.trainer.estimated_stepping_batches))

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        return configure_optimization(
            self.named_parameters(), self.optimization, self.optimizer_factory, self.total_optimizer_steps()
        )

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """Step only on a finite loss and finite gradients; stop before a checkpoint could hold diverged weights."""
        if optimizer_closure is None or not self._guards_steps():
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        loss = optimizer_closure()  # training_step, zero_grad, backward
        trained = [p for p in self.parameters() if p.requires_grad]
        if self.count_step(loss is not None and all_finite([loss]) and all_finite(p.grad for p in trained)):
            grads = [p.grad.detach().float().norm() for p in trained if p.grad is not None]
            if grads:  # the same train/grad_norm GRPO logs (before clipping), so the stages compare in TensorBoard
                self.log("train/grad_norm", torch.stack(grads).norm(), on_step=True, on_epoch=False)
            self.checked_step(optimizer, lambda: optimizer.step(closure=lambda: loss))
            return None
        optimizer.zero_grad()
        return None

    def count_step(self, finite: bool) -> bool:
        """Whether to apply this step (`DivergenceGuard.count`; also called by GRPO's manual step)."""
        return self.guard.count(finite, self.global_step)

    def checked_step(self, optimizer: Any, step: Any) -> None:
        """Run the optimizer update `step` under `DivergenceGuard.checked` (also GRPO's manual step)."""
        self.guard.checked([p for p in self.parameters() if p.requires_grad], optimizer, step, self.global_step)

    def _guards_steps(self) -> bool:
        """Whether `optimizer_step` checks steps itself (not under a GradScaler or DeepSpeed, which handle it)."""
        trainer = self.trainer
        if type(trainer.strategy).__name__.startswith("DeepSpeed"):
            return False
        return getattr(trainer.precision_plugin, "scaler", None) is None

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.log("train/nonfinite_skips", float(self.nonfinite_skips), batch_size=1)

    def on_fit_start(self) -> None:
        """Runs after `configure_optimizers`, before the checkpoint restore: see `release_early_train_loader`."""
        release_early_train_loader(self.trainer)

    # ------------------------------------------------------------------------------------ checkpoints
    def checkpoint_keys(self) -> set[str]:
        """State-dict keys a checkpoint keeps (`ecr.modules.checkpointing.trainable_keys`)."""
        return trainable_keys(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only the trained tensors: frozen weights come back from their source at load time."""
        keep_trainable(self, checkpoint)
        checkpoint["ecr_stage"] = {"nonfinite_skips": self.guard.nonfinite_skips}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.guard.nonfinite_skips = int((checkpoint.get("ecr_stage") or {}).get("nonfinite_skips", 0))

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> _IncompatibleKeys:
        """Load a trainable-only state dict; strict = every kept tensor present and nothing unknown."""
        self.configure_model()  # idempotent; e.g. ddp_spawn handing rank 0's weights back to the main process
        missing, unexpected = check_trainable(self, state_dict, strict)
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        return type(result)(missing_keys=missing, unexpected_keys=unexpected)
