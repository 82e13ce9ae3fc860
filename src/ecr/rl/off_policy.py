"""Truncated importance sampling for completions the trained policy did not sample itself (docs/method.md §4).

A rollout engine other than the trainer (a vLLM server) or a filtered sampler (top-k / top-p) draws completions
from a distribution q that differs from the policy π_old whose log-probs the loss uses. With the sampler's own
log-probs supplied, each token's policy term is weighted by w = π_old / q, kept bounded as TRL 1.16 defines its
modes (names and semantics the same, so recipes carry over):

- `token_truncate`:    w_t = clamp(exp(old_t − q_t), clip_min, clip_max)
- `token_mask`:        w_t = exp(old_t − q_t), set to 0 where outside [clip_min, clip_max]
- `sequence_truncate`: w = clamp(exp(Σ_t m_t (old_t − q_t)), clip_min, clip_max), one per completion
- `sequence_mask`:     the same sequence ratio, 0 for a completion outside [clip_min, clip_max]

`clip_min` None means no lower bound (0 for truncation, −∞ for masking), `clip_max` None no upper bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ecr.errors import ConfigError

CorrectionMode = Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]
CORRECTION_MODES: tuple[str, ...] = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


@dataclass(frozen=True)
class CorrectionStats:
    """Detached 0-d tensors over the active tokens: the applied weight's mean/min/max, the share of active tokens
    whose weight a mask mode set to 0, and the mean |old − sampler| log-prob difference (how far off-policy)."""

    mean: torch.Tensor
    min: torch.Tensor
    max: torch.Tensor
    masked_fraction: torch.Tensor
    mean_abs_logp_diff: torch.Tensor


def sampler_correction(
    old_logp: torch.Tensor,
    sampler_logp: torch.Tensor,
    mask: torch.Tensor,
    mode: CorrectionMode = "sequence_mask",
    clip_max: float | None = 3.0,
    clip_min: float | None = None,
) -> tuple[torch.Tensor, CorrectionStats]:
    """Per-token weights of the policy term ([N, C]; a sequence mode's weight is broadcast to its tokens).

    old_logp, sampler_logp, mask [N, C]; no gradient flows (the weights are constants of the loss).
    """
    if mode not in CORRECTION_MODES:
        raise ConfigError(f"off_policy_correction must be one of {CORRECTION_MODES}, got {mode!r}")
    if clip_max is not None and clip_min is not None and clip_min > clip_max:
        raise ConfigError(f"clip_min {clip_min} > clip_max {clip_max}")
    with torch.no_grad():
        m = mask.to(old_logp.dtype)
        diff = (old_logp - sampler_logp) * m  # [N, C]
        log_w = diff.sum(dim=1, keepdim=True) if mode.startswith("sequence") else diff  # [N, 1] or [N, C]
        ratio = torch.exp(log_w)
        if mode.endswith("truncate"):
            weights = ratio.clamp(min=clip_min if clip_min is not None else 0.0, max=clip_max)
            outside = torch.zeros_like(ratio, dtype=torch.bool)
        else:
            low = clip_min if clip_min is not None else -math.inf
            high = clip_max if clip_max is not None else math.inf
            outside = (ratio < low) | (ratio > high)
            weights = ratio.masked_fill(outside, 0.0)
        weights, outside = weights.expand_as(m), outside.expand_as(m)
        count = m.sum().clamp(min=1)
        active = m.bool()
        big = torch.finfo(weights.dtype).max
        stats = CorrectionStats(
            mean=(weights * m).sum() / count,
            min=torch.where(active, weights, big).amin() if active.any() else weights.new_zeros(()),
            max=torch.where(active, weights, -big).amax() if active.any() else weights.new_zeros(()),
            masked_fraction=(outside.to(m.dtype) * m).sum() / count,
            mean_abs_logp_diff=diff.abs().sum() / count,
        )
    return weights, stats
