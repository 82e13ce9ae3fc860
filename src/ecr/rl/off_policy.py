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
GRPO's `off_policy_correction` setting picks the mode ("auto": `token_truncate` when the rollout carries the
sampler's log-probs, because today they come from ecr's own filtered sampler, whose per-token ratios are all ≤ 1
so that a sequence ratio vanishes with length; "none": uncorrected, biased); `policy_weights` builds the loss's
token weights from it and what `GRPOModule` logs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

import torch

from ecr.errors import ConfigError

CorrectionMode = Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]
CORRECTION_MODES: tuple[str, ...] = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")
OffPolicySetting = Literal["auto", "none", "token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]
OFF_POLICY_SETTINGS: tuple[str, ...] = ("auto", "none", *CORRECTION_MODES)
# "auto"'s mode for a filtered sampler (top-k/top-p/min-p): token-level, as Yao et al.'s truncated IS. TRL 1.16's
# default `sequence_mask` is meant for an engine mismatch (small noise both ways), not a systematic filter.
DEFAULT_MODE: CorrectionMode = "token_truncate"


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


def resolve_correction(setting: OffPolicySetting, has_sampler_logp: bool) -> CorrectionMode | None:
    """The mode a rollout is corrected with: None without the sampler's log-probs (its samples are π's own) or
    with "none"; "auto" is `DEFAULT_MODE` (token_truncate)."""
    if setting not in OFF_POLICY_SETTINGS:
        raise ConfigError(f"off_policy_correction must be one of {OFF_POLICY_SETTINGS}, got {setting!r}")
    if not has_sampler_logp or setting == "none":
        return None
    return DEFAULT_MODE if setting == "auto" else setting


def policy_weights(
    old_logp: torch.Tensor | None,
    sampler_logp: torch.Tensor | None,
    mask: torch.Tensor,
    keep: torch.Tensor | None = None,
    *,
    setting: OffPolicySetting = "auto",
    clip_max: float | None = 3.0,
    clip_min: float | None = None,
) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """The policy term's token weights [N, C] (None: all 1) and what to log.

    The weights are the sampler correction `setting` resolves to (`resolve_correction`) times `keep` (the
    high-entropy mask, or None); the log holds the correction's `CorrectionStats` as `train/off_policy/<field>`,
    empty when no correction applies. old_logp, sampler_logp, mask, keep [N, C].
    """
    mode = resolve_correction(setting, sampler_logp is not None)
    if mode is None or sampler_logp is None:
        return keep, {}
    if old_logp is None:
        raise ValueError("the sampler correction needs the sampling-time log-probs of the policy (old_logp)")
    weights, stats = sampler_correction(old_logp, sampler_logp, mask, mode, clip_max, clip_min)  # [N, C]
    logged = {f"train/off_policy/{f.name}": getattr(stats, f.name) for f in fields(stats)}
    return (weights if keep is None else weights * keep), logged
