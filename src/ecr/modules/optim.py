"""Optimisation parts of the training stages (ERV, SFT, GRPO): their settings, the optimizer + schedule, and the
non-finite guard.

- `OptimizationSettings`: the default AdamW (`lr`, `weight_decay`) and the schedule (`scheduler`, a transformers
  schedule by name, after linear warmup over `warmup_ratio` of the optimizer steps); an injected `optimizer:`
  factory (YAML `class_path: torch.optim.SGD`, ...) replaces the AdamW and keeps its own settings.
- `configure_optimization`: parameters split into decayed weights and undecayed biases/norms (`decay_groups`).
- `DivergenceGuard`: a step whose loss or gradients are not finite is skipped (the weights and optimizer state
  stay as they were; counted in `nonfinite_skips`), and `max_nonfinite_skips` skips in a row, or a step that
  makes the weights non-finite or explodes them (their norm grows more than `max_weight_growth` times at once,
  e.g. lr 1e30), stop the run with `TrainingDivergedError` before that step's checkpoint is written, so
  checkpoints never hold diverged weights. (fp16 runs with a GradScaler and DeepSpeed keep their own overflow
  handling.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from ecr.errors import ConfigError, TrainingDivergedError

if TYPE_CHECKING:
    from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

OptimizerFactory = Callable[[Iterable[Any]], torch.optim.Optimizer]


@dataclass(frozen=True)
class OptimizationSettings:
    """The default optimizer (AdamW) and learning-rate schedule of a training stage."""

    lr: float = 2e-5
    """Peak learning rate of the default AdamW (ignored when `optimizer` is given)."""
    weight_decay: float = 0.0
    """Weight decay of the default AdamW (biases and norms are never decayed)."""
    warmup_ratio: float = 0.0
    """Fraction of the optimizer steps spent in linear warmup before the schedule's decay, in [0, 1)."""
    scheduler: str = "cosine"
    """transformers schedule name after warmup (cosine, linear, constant_with_warmup, ...)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")

    @classmethod
    def of(
        cls, given: OptimizationSettings | Mapping[str, Any] | None, default: OptimizationSettings
    ) -> OptimizationSettings:
        """`given` (settings, or a dict of the fields that differ from the stage's `default`) as settings."""
        if isinstance(given, OptimizationSettings):
            return given
        return replace(default, **dict(given or {}))


def decay_groups(named: Iterable[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters as optimizer groups: [decayed weights, undecayed biases and norms].

    With `weight_decay == 0` the split changes nothing, so it is one group (and the learning rate is logged as
    plain `lr`, not `lr/pg1`, `lr/pg2`). The decayed group carries no value of its own: the optimizer's applies.
    """
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in named:
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    if not weight_decay or not decay or not no_decay:
        return [{"params": decay + no_decay}] if decay or no_decay else []
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def configure_optimization(
    named: Iterable[tuple[str, torch.nn.Parameter]],
    settings: OptimizationSettings,
    factory: OptimizerFactory | None,
    total_steps: int,
) -> OptimizerLRSchedulerConfig:
    """Lightning's `configure_optimizers` answer: the optimizer over the trainable parameters and the per-step
    schedule (warmup over `warmup_ratio` of `total_steps`, then `settings.scheduler`)."""
    from transformers import get_scheduler

    if factory is None:
        factory = partial(torch.optim.AdamW, lr=settings.lr, weight_decay=settings.weight_decay)
    probe = factory([torch.nn.Parameter(torch.zeros(1))])  # the weight decay the optimizer will apply
    groups = decay_groups(named, float(probe.defaults.get("weight_decay", 0.0)))
    if not groups:
        raise ConfigError("no trainable parameters: check the LoRA and freeze settings")
    optimizer = factory(groups)
    warmup = int(round(settings.warmup_ratio * total_steps))
    try:
        schedule = get_scheduler(settings.scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    except ValueError as err:
        raise ConfigError(f"scheduler: {err}") from err
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step", "name": "lr"}}


def weight_norm(tensors: Iterable[torch.Tensor]) -> float:
    """Global L2 norm of `tensors` as a float (inf/NaN if any value is), one device sync."""
    norms = [torch.linalg.vector_norm(t.detach().float()) for t in tensors]
    return float(torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]))) if norms else 0.0


def all_finite(tensors: Iterable[torch.Tensor | None]) -> bool:
    """True when every given tensor (None entries ignored) holds only finite values (one device sync)."""
    flags = [torch.isfinite(t).all() for t in tensors if t is not None]
    return bool(torch.stack([f.to(flags[0].device) for f in flags]).all()) if flags else True


@dataclass
class DivergenceGuard:
    """Book-keeping of skipped non-finite steps and the checks that stop a diverging run (module docstring)."""

    max_nonfinite_skips: int = 3  # non-finite steps in a row that stop the run
    max_weight_growth: float = 10.0  # one optimizer step growing the trained weights' norm more stops the run
    nonfinite_skips: int = 0  # steps skipped for a non-finite loss or gradient, over the whole fit
    in_a_row: int = 0

    def count(self, finite: bool, step: int) -> bool:
        """Whether to apply optimizer step `step` (0-based). A non-finite one is counted; `max_nonfinite_skips`
        in a row raise `TrainingDivergedError`, so no later checkpoint can store diverged weights."""
        if finite:
            self.in_a_row = 0
            return True
        self.nonfinite_skips += 1
        self.in_a_row += 1
        if self.in_a_row >= self.max_nonfinite_skips:
            raise TrainingDivergedError(
                f"step {step + 1}: {self.in_a_row} steps in a row with a non-finite loss or "
                f"gradient ({self.nonfinite_skips} in all); stopped, the last checkpoint holds the last good weights"
            )
        return False

    def checked(self, trained: list[torch.Tensor], optimizer: Any, apply: Callable[[], Any], step: int) -> None:
        """Run `apply` (the optimizer update); stop if it made the `trained` weights non-finite or exploded them.

        Exploded = the trained weights' global norm grew more than `max_weight_growth` times in one step (from
        at least 1): a huge lr gives weights of 1e30 whose loss may still be finite on that step, and a
        checkpoint of them would resume to NaN at once. Raising here, before Lightning saves the step, keeps
        every checkpoint on the last good weights. Shared by automatic optimisation and manual stepping (GRPO).
        """
        before = weight_norm(trained)
        apply()
        after = weight_norm(trained)
        where, lr = f"step {step + 1}", f"lr {optimizer.param_groups[0]['lr']:.3g}"
        if not math.isfinite(after):
            raise TrainingDivergedError(
                f"{where}: weights are not finite after the optimizer step ({lr}); stopped before checkpointing "
                "them, the last checkpoint holds the last good weights: lower the lr"
            )
        if after > self.max_weight_growth * max(before, 1.0):
            raise TrainingDivergedError(
                f"{where}: the optimizer step exploded the weights (norm {before:.3g} -> {after:.3g}, more than "
                f"x{self.max_weight_growth:g}; {lr}); stopped before checkpointing them, the last checkpoint holds "
                "the last good weights: lower the lr"
            )
