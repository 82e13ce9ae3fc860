"""The GRPO objective: clipped token ratios, k3 KL to the reference, four normalisations (docs/method.md §4).

Per token t of completion i, with ratio ρ = exp(logp − old_logp) and advantage A_i,

    l_it = −min(ρ·A_i, clip(ρ, 1 − ε_low, 1 + ε_high)·A_i) + β·KL_it,   KL_it = exp(ref − logp) − (ref − logp) − 1

(k3, an unbiased, always ≥ 0 estimate of KL(π‖π_ref)); `use_bias_correction_kl=True` weights it by the
differentiable ratio, ρ·KL_it, as TRL 1.16's default does (DeepSeek-V3.2). With
`importance_sampling_level="sequence"` (GSPO, Zheng et al. 2025, as TRL defines it) ρ is one ratio per completion,
ρ_i = exp(Σ_t m_it (logp − old_logp) / Σ_t m_it), used for every token of completion i and clipped the same way.
`loss_type` says how the masked l_it are reduced; each name means exactly what it means in TRL's GRPOTrainer,
so results compare (`benchmarks/check_trl_loss.py` runs TRL 1.16's own code beside this one):

- `grpo`: per completion Σ_t / its active tokens (≥ 1), then the mean over the micro-batch's completions
  (a fully masked row, e.g. a masked truncated one, still counts, as 0, as in TRL);
- `bnpo`: Σ over the micro-batch's active tokens / their count (≥ 1);
- `dr_grpo`: Σ / (N · max_completion_length), a constant denominator (no length bias);
- `dapo`: Σ / `num_items_in_batch`, the active tokens of the WHOLE optimizer step (every micro-batch, every
  rank), so each token weighs the same however the batch is split.

Gradient accumulation: the caller multiplies each micro-batch loss by `accumulation_scale(...)` before
`backward` and lets the gradients SUM over micro-batches; it never averages micro-batch losses again.

With one update per rollout, old_logp = logp.detach(): ρ = 1 in value, clipping never acts, and the gradient
is that of the paper's −(exp(logp − sg(logp))·A − β·KL) (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from ecr.errors import ConfigError

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
LOSS_TYPES: tuple[str, ...] = ("grpo", "bnpo", "dr_grpo", "dapo")
ImportanceSamplingLevel = Literal["token", "sequence"]
IMPORTANCE_SAMPLING_LEVELS: tuple[str, ...] = ("token", "sequence")


@dataclass(frozen=True)
class LossStats:
    """Detached 0-d tensors over this micro-batch's active tokens (no host sync until logged).

    `clip_low_fraction`: ρ < 1 − ε_low with A < 0 (the low clip holds the token's gradient at zero);
    `clip_high_fraction`: ρ > 1 + ε_high with A > 0; `clip_region_fraction`: either. `mean_kl` is the mean
    k3 (0 without a reference), `mean_ratio` the mean ρ, `num_tokens` the active-token count (to weight these
    means when combining micro-batches).
    """

    clip_low_fraction: torch.Tensor
    clip_high_fraction: torch.Tensor
    clip_region_fraction: torch.Tensor
    mean_kl: torch.Tensor
    mean_ratio: torch.Tensor
    num_tokens: torch.Tensor


def accumulation_scale(loss_type: LossType, num_micro_batches: int, world_size: int = 1) -> float:
    """The factor each micro-batch loss is multiplied by before `backward` (gradients then sum).

    `grpo`/`bnpo`/`dr_grpo` are per-micro-batch means, so the step's loss is their mean: 1/num_micro_batches
    (DDP's gradient averaging over ranks is then the right mean too). `dapo` is already divided by the global
    token count, so micro-batches must simply sum; DDP/DeepSpeed still AVERAGE gradients over ranks, which
    `world_size` undoes (TRL divides `num_items_in_batch` by the number of processes instead: the same).
    """
    if loss_type not in LOSS_TYPES:
        raise ConfigError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if num_micro_batches < 1 or world_size < 1:
        raise ConfigError(f"num_micro_batches and world_size must be >= 1, got {num_micro_batches}, {world_size}")
    return float(world_size) if loss_type == "dapo" else 1.0 / num_micro_batches


def _masked_mean(values: torch.Tensor, mask: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Σ values·mask / count, detached; values, mask [N, C]."""
    return ((values * mask).sum() / count).detach()


def _check_args(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    settings: dict[str, Any],
) -> None:
    """Shapes and settings of `grpo_loss`, each refused with the value it got."""
    if settings["loss_type"] not in LOSS_TYPES:
        raise ConfigError(f"loss_type must be one of {LOSS_TYPES}, got {settings['loss_type']!r}")
    if settings["importance_sampling_level"] not in IMPORTANCE_SAMPLING_LEVELS:
        raise ConfigError(
            f"importance_sampling_level must be one of {IMPORTANCE_SAMPLING_LEVELS}, "
            f"got {settings['importance_sampling_level']!r}"
        )
    if logp.dim() != 2 or logp.shape[0] < 1:
        raise ValueError(f"logp must be [N, C] with N >= 1, got shape {tuple(logp.shape)}")
    others = (("old_logp", old_logp), ("mask", mask), ("ref_logp", ref_logp), ("policy_weights", settings["weights"]))
    for name, other in others:
        if other is not None and other.shape != logp.shape:
            raise ValueError(f"{name} must have logp's shape {tuple(logp.shape)}, got {tuple(other.shape)}")
    if advantages.shape != logp.shape[:1]:
        raise ValueError(f"advantages must be [N] = [{logp.shape[0]}], got shape {tuple(advantages.shape)}")
    low, high, beta = settings["epsilon_low"], settings["epsilon_high"], settings["beta"]
    if not 0 <= low < 1 or high < 0:
        raise ConfigError(f"need 0 <= epsilon_low < 1 and epsilon_high >= 0, got {low}, {high}")
    if beta < 0:
        raise ConfigError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_logp is None:
        raise ConfigError(f"beta = {beta} > 0 needs ref_logp (the reference policy's token log-probs)")
    if beta == 0 and ref_logp is not None:
        raise ConfigError("beta = 0 takes ref_logp=None: the KL term is off, do not compute a reference pass")
    for name in ("log_ratio_clamp", "kl_clamp"):
        if settings[name] is not None and settings[name] <= 0:
            raise ConfigError(f"{name} must be > 0 or None, got {settings[name]}")


def importance_weights(
    log_ratio: torch.Tensor, mask: torch.Tensor, level: ImportanceSamplingLevel = "token"
) -> torch.Tensor:
    """The PPO/GSPO ratio: per token exp(logp − old) ("token"), or one per completion ("sequence", GSPO),
    exp(mean over its active tokens of (logp − old)), broadcast to its tokens.

    log_ratio, mask [N, C] -> ratio [N, C] (the sequence ratio is an expanded [N, 1], not a copy).
    """
    if level == "token":
        return torch.exp(log_ratio)
    per_sequence = (log_ratio * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp(min=1)  # [N, 1]
    return torch.exp(per_sequence).expand_as(log_ratio)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor, clamp: float | None = None) -> torch.Tensor:
    """k3 = exp(ref − logp) − (ref − logp) − 1 per token (≥ 0); [N, C] -> [N, C]."""
    diff = ref_logp - logp
    if clamp is not None:
        diff = diff.clamp(-clamp, clamp)
    return torch.exp(diff) - diff - 1


def reduce_loss(
    masked: torch.Tensor,
    mask: torch.Tensor,
    loss_type: LossType,
    max_completion_length: int | None = None,
    num_items_in_batch: int | float | torch.Tensor | None = None,
) -> torch.Tensor:
    """The micro-batch loss from masked per-token terms (see the module docstring); masked, mask [N, C] -> 0-d."""
    if loss_type == "grpo":
        return (masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1)
    if loss_type == "dr_grpo":
        if max_completion_length is None or max_completion_length < 1:
            raise ConfigError(f"loss_type='dr_grpo' needs max_completion_length >= 1, got {max_completion_length}")
        return masked.sum() / (masked.shape[0] * max_completion_length)
    if num_items_in_batch is None:
        raise ConfigError(
            "loss_type='dapo' needs num_items_in_batch: the active completion tokens of the whole "
            "optimizer step (all micro-batches, all ranks)"
        )
    # A tensor count is not compared on the host: that would sync the device every micro-batch.
    bad = num_items_in_batch.dim() != 0 if torch.is_tensor(num_items_in_batch) else num_items_in_batch < 0
    if bad:
        raise ConfigError(f"num_items_in_batch must be a 0-d count >= 0, got {num_items_in_batch}")
    total = torch.as_tensor(num_items_in_batch, dtype=masked.dtype, device=masked.device)
    return masked.sum() / total.clamp(min=1)


def _loss_stats(
    ratio: torch.Tensor, adv: torch.Tensor, kl: torch.Tensor, m: torch.Tensor, epsilon_low: float, epsilon_high: float
) -> LossStats:
    """Clip fractions, mean k3 and mean ratio over the active tokens (detached); [N, C] tensors, adv [N, 1]."""
    with torch.no_grad():
        count = m.sum().clamp(min=1)
        low = ((ratio < 1 - epsilon_low) & (adv < 0)).to(m.dtype)  # [N, C]
        high = ((ratio > 1 + epsilon_high) & (adv > 0)).to(m.dtype)  # [N, C]
        return LossStats(
            clip_low_fraction=_masked_mean(low, m, count),
            clip_high_fraction=_masked_mean(high, m, count),
            clip_region_fraction=_masked_mean(torch.maximum(low, high), m, count),
            mean_kl=_masked_mean(kl, m, count),
            mean_ratio=_masked_mean(ratio, m, count),
            num_tokens=m.sum().detach(),
        )


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: LossType = "grpo",
    importance_sampling_level: ImportanceSamplingLevel = "token",
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    beta: float = 0.04,
    max_completion_length: int | None = None,
    num_items_in_batch: int | float | torch.Tensor | None = None,
    log_ratio_clamp: float | None = None,
    kl_clamp: float | None = None,
    policy_weights: torch.Tensor | None = None,
    use_bias_correction_kl: bool = False,
) -> tuple[torch.Tensor, LossStats]:
    """The loss (0-d, carries the gradient of `logp`) and its `LossStats` for one micro-batch.

    Shapes: logp, old_logp, ref_logp, mask [N, C] (N = completions of this micro-batch, C = completion
    tokens); advantages [N]. `ref_logp` must be None when β = 0 (no reference pass is computed) and given
    when β > 0. `max_completion_length` is required by `dr_grpo`, `num_items_in_batch` (global active tokens,
    an int or a 0-d tensor after an all-reduce) by `dapo`. Log-probs are upcast to at least float32.
    `importance_sampling_level="sequence"` is GSPO (`importance_weights`), TRL's semantics: the clip bounds
    apply to the one ratio of each completion, the KL term stays per token. `policy_weights` [N, C] multiply the
    policy term only (not the KL), as TRL applies them: the sampler correction (`ecr.rl.off_policy`) and the
    high-entropy token mask (`ecr.rl.entropy`). `use_bias_correction_kl` (TRL's name; False = the paper's k3)
    multiplies the KL term by ρ (token or sequence level), which changes its gradient even where ρ = 1.

    `log_ratio_clamp` / `kl_clamp` (None = off) clamp logp − old_logp and ref − logp to ±value before `exp`,
    for numerical safety with bf16 or a far-drifted reference. They change the objective (and zero the
    gradient of the clamped terms) only where |difference| > value, i.e. a ratio beyond e^value.
    """
    settings = dict(loss_type=loss_type, importance_sampling_level=importance_sampling_level, beta=beta,
                    epsilon_low=epsilon_low, epsilon_high=epsilon_high, log_ratio_clamp=log_ratio_clamp,
                    kl_clamp=kl_clamp, weights=policy_weights)  # fmt: skip
    _check_args(logp, old_logp, ref_logp, advantages, mask, settings)
    dtype = torch.promote_types(logp.dtype, torch.float32)
    lp = logp.to(dtype)  # [N, C]
    m = mask.to(dtype)  # [N, C]
    adv = advantages.to(dtype)[:, None]  # [N, 1]

    log_ratio = lp - old_logp.to(dtype)  # [N, C]
    if log_ratio_clamp is not None:
        log_ratio = log_ratio.clamp(-log_ratio_clamp, log_ratio_clamp)
    ratio = importance_weights(log_ratio, m, importance_sampling_level)  # [N, C]
    clipped = ratio.clamp(1 - epsilon_low, 1 + epsilon_high)  # [N, C]
    per_token = -torch.minimum(ratio * adv, clipped * adv)  # [N, C]
    if policy_weights is not None:
        per_token = per_token * policy_weights.to(dtype)
    kl = torch.zeros_like(lp) if ref_logp is None else k3_kl(lp, ref_logp.to(dtype), kl_clamp)  # [N, C]
    if ref_logp is not None:
        per_token = per_token + beta * (kl * ratio if use_bias_correction_kl else kl)
    loss = reduce_loss(per_token * m, m, loss_type, max_completion_length, num_items_in_batch)
    return loss, _loss_stats(ratio, adv, kl, m, epsilon_low, epsilon_high)
