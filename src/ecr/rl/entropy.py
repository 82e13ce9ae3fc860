"""Entropy controls of the GRPO loss: train on high-entropy tokens only, and an entropy bonus (TRL 1.16 semantics).

- `high_entropy_mask` ("Beyond the 80/20 rule", Wang et al. 2025; TRL's `top_entropy_quantile` ρ): keep in the
  policy term only the tokens whose entropy is at least the (1 − ρ) quantile of the active tokens' entropies
  (over every rank: pass the gathered entropies). ρ = 1 keeps every token; ρ = 0 only the highest.
- `entropy_term`: H̄, the mean per-token entropy of the tokens the policy term trains on (active, times the
  high-entropy mask when given), whatever the `loss_type`, as TRL 1.16 defines it; it is scaled so that the
  micro-batches of an optimizer step, combined by `ecr.rl.loss.accumulation_scale`, give a mean of their H̄:
  grpo/bnpo/dr_grpo (scale 1/micro-batches) the plain mean, as TRL; dapo (micro-batches sum) H̄ times this
  micro-batch's share of the step's active tokens, Σ m / `num_items_in_batch`, a token-weighted mean (TRL's
  plain mean when the micro-batches hold equal token counts). The loss is policy − `entropy_coef` · H̄.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ecr.errors import ConfigError
from ecr.rl.loss import LossType


def high_entropy_mask(
    entropies: torch.Tensor, mask: torch.Tensor, top_quantile: float, pool: torch.Tensor | None = None
) -> torch.Tensor:
    """bool [N, C]: active tokens with entropy ≥ the (1 − top_quantile) quantile of `pool`.

    entropies, mask [N, C]; pool [K] the active entropies the quantile is taken over (default: this batch's;
    under DDP the caller passes every rank's, gathered). An empty pool keeps no token.
    """
    if not 0.0 <= top_quantile <= 1.0:
        raise ConfigError(f"top_entropy_quantile must be in [0, 1], got {top_quantile}")
    active = mask.bool()
    values = (entropies[active] if pool is None else pool).float()
    if values.numel() == 0:
        return torch.zeros_like(active)
    threshold = torch.quantile(values, 1.0 - top_quantile)
    return (entropies.float() >= threshold) & active


def gathered_entropies(
    entropies: torch.Tensor, mask: torch.Tensor, all_gather: Callable[[torch.Tensor], Any]
) -> torch.Tensor:
    """Every rank's active-token entropies [K] (the `pool` of `high_entropy_mask` under DDP): each rank pads its
    own to the longest rank's count with −1 (entropies are ≥ 0), `all_gather` stacks them, the padding is dropped.
    entropies, mask [N, C]; `all_gather` is Lightning's `LightningModule.all_gather` (or any same-shape gather)."""
    local = entropies[mask.bool()].float()
    sizes = torch.as_tensor(all_gather(torch.tensor([local.numel()], device=local.device))).reshape(-1)
    padded = torch.full((int(sizes.max()),), -1.0, device=local.device)
    padded[: local.numel()] = local
    gathered = torch.as_tensor(all_gather(padded)).reshape(-1)
    return gathered[gathered >= 0]


def entropy_term(
    entropies: torch.Tensor,
    mask: torch.Tensor,
    loss_type: LossType,
    num_items_in_batch: int | float | torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """The micro-batch's H̄ for the bonus (0-d, carries the gradient of `entropies`); entropies, mask, keep [N, C].

    The mean is over mask · keep; dapo then weighs it by Σ mask / `num_items_in_batch` (module docstring)."""
    m = mask.to(entropies.dtype)
    trained = m if keep is None else m * keep.to(entropies.dtype)  # [N, C]
    mean = (entropies * trained).sum() / trained.sum().clamp(min=1)
    if loss_type != "dapo":
        return mean
    if num_items_in_batch is None:
        raise ConfigError("the entropy bonus with loss_type='dapo' needs num_items_in_batch")
    total = torch.as_tensor(num_items_in_batch, dtype=mean.dtype, device=mean.device)
    return mean * m.sum() / total.clamp(min=1)


def entropy_bonus(
    entropies: torch.Tensor,
    mask: torch.Tensor,
    keep: torch.Tensor | None,
    coef: float,
    loss_type: LossType,
    num_items_in_batch: int | float | torch.Tensor | None = None,
) -> torch.Tensor:
    """coef · H̄ over the tokens the policy term trains on (mask, times the high-entropy mask `keep` when given),
    to subtract from the loss; a 0-d zero when coef = 0. [N, C] inputs."""
    if coef == 0:
        return entropies.new_zeros(())
    return coef * entropy_term(entropies, mask, loss_type, num_items_in_batch, keep)
