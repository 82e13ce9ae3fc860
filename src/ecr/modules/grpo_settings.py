"""The settings of the GRPO stage (`GRPOModule(grpo=GRPOSettings(...))`, YAML `model.init_args.grpo`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ecr.errors import ConfigError
from ecr.modules.optim import OptimizationSettings
from ecr.rl.advantages import AdvantageScale
from ecr.rl.off_policy import OFF_POLICY_SETTINGS, OffPolicySetting

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
ImportanceSamplingLevel = Literal["token", "sequence"]
Reference = Literal["auto", "adapter", "copy"]

GRPO_OPTIMIZATION = OptimizationSettings(lr=1e-6, weight_decay=0.0, warmup_ratio=0.0, scheduler="constant_with_warmup")


@dataclass(frozen=True)
class GRPOSettings:
    """How GRPO samples, scores and updates (docs/method.md §4); the defaults are the paper's."""

    num_generations: int = 4
    """Completions sampled per prompt (G)."""
    beta: float = 0.04
    """Weight of the k3 KL penalty to the reference policy (0 = no reference pass at all)."""
    use_bias_correction_kl: bool = False
    """Weight each token's KL term by its importance ratio (TRL's use_bias_correction_kl, True by default there);
    False = the paper's plain k3 term."""
    loss_type: LossType = "grpo"
    """Loss normalisation: grpo (paper) | bnpo | dr_grpo | dapo, as TRL defines them."""
    epsilon_low: float = 0.2
    """Lower PPO clip range (ratio floor 1 - epsilon_low)."""
    epsilon_high: float = 0.2
    """Upper PPO clip range (ratio ceiling 1 + epsilon_high; DAPO raises it)."""
    importance_sampling_level: ImportanceSamplingLevel = "token"
    """token (PPO/GRPO: one ratio per token) | sequence (GSPO: one ratio per completion, the exp of the mean
    token log-ratio, clipped with epsilon_low/high), as TRL defines them."""
    top_entropy_quantile: float = 1.0
    """Train the policy term only on the completion tokens whose entropy is in the top fraction (TRL's rho,
    "Beyond the 80/20 rule"; 0.2 there): 1.0 keeps every token, 0.0 only the highest-entropy one."""
    entropy_coef: float = 0.0
    """Entropy bonus: the loss becomes loss - entropy_coef * (mean entropy of the trained tokens), normalised per
    loss_type as the policy term (TRL's entropy_coef; 0 = off)."""
    off_policy_correction: OffPolicySetting = "auto"
    """Truncated importance sampling of the policy term by pi_old / q when the sampler's distribution q is not the
    policy's (sampling.top_k/top_p/min_p on): token_truncate | token_mask | sequence_truncate | sequence_mask, as
    TRL's vllm_importance_sampling_mode; auto = token_truncate when the rollout carries the sampler's log-probs
    (a filter's per-token ratios are <= 1, so sequence modes vanish with length), nothing otherwise; none = no
    correction (a biased gradient, warned about)."""
    off_policy_clip_max: float | None = 3.0
    """Upper bound C_max of the correction (TRL's vllm_importance_sampling_clip_max): truncate modes clip the
    ratio to it, mask modes zero ratios above it (None = no upper bound)."""
    off_policy_clip_min: float | None = None
    """Lower bound C_min of the correction (TRL's vllm_importance_sampling_clip_min): truncate modes clip the
    ratio up to it, mask modes zero ratios below it (None = no lower bound)."""
    num_iterations: int = 1
    """Updates (μ) on each rollout batch; > 1 records old log-probs at sampling time."""
    gradient_accumulation_steps: int = 1
    """Micro-batches of prompts per optimizer step."""
    max_grad_norm: float | None = 1.0
    """Gradient clipping by total norm (None = off; the norm is logged either way)."""
    scale_rewards: AdvantageScale = "group"
    """Advantage scaling: group (paper: / group std) | batch (/ batch std) | none (Dr. GRPO)."""
    filter_zero_std_groups: bool = False
    """Drop groups whose rewards have zero spread from the loss."""
    dynamic_sampling: bool = False
    """DAPO's dynamic sampling: keep drawing prompt batches (from the same resumable sampler) until each
    micro-batch holds batch_size groups with reward spread, or max_resample_rounds extra draws were made; steps
    then consume more prompts, so an epoch has fewer steps (set trainer.max_steps)."""
    max_resample_rounds: int = 4
    """Extra draws per micro-batch allowed by dynamic_sampling; a step still short after them trains on the
    informative groups it has (counted in train/dynamic/short_steps)."""
    mask_truncated_completions: bool = False
    """Exclude completions that hit max_new_tokens without EOS (DAPO)."""
    reference: Reference = "auto"
    """auto (adapter when LoRA is on, else copy) | adapter | copy (frozen copy loaded once)."""
    reference_device: str | None = None
    """Device of a copy reference (None = the policy's; "cpu" saves accelerator memory)."""
    ref_model_sync_steps: int | None = None
    """Copy the policy into a copy reference every N optimizer steps (None = never)."""
    logprob_chunk_tokens: int | None = None
    """Tokens per chunk of the LM head in log-prob passes (None = a 128 MiB budget)."""
    share_prompt_prefix: bool = True
    """Prefill each prompt once for its G samples and run it once per group in log-prob passes, sharing its KV
    cache with the G completions (same samples, values and gradients; the log-prob passes turn it off
    automatically under gradient checkpointing)."""
    max_nonfinite_skips: int = 3
    """Stop after this many non-finite steps in a row (none of them was applied)."""
    log_completions_every_n_steps: int = 10
    """Write a completion table to TensorBoard every N optimizer steps (0 = off)."""
    val_max_new_tokens: int | None = None
    """Generation length in validation (None = the sampling max_new_tokens)."""

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ConfigError(
                f"num_generations must be >= 2 (advantages compare completions), got {self.num_generations}"
            )
        if self.num_iterations < 1 or self.gradient_accumulation_steps < 1:
            raise ConfigError("num_iterations and gradient_accumulation_steps must be >= 1")
        if self.beta < 0:
            raise ConfigError(f"beta must be >= 0, got {self.beta}")
        if self.loss_type not in ("grpo", "bnpo", "dr_grpo", "dapo"):
            raise ConfigError(f"loss_type: {self.loss_type!r} is not grpo, bnpo, dr_grpo or dapo")
        if self.importance_sampling_level not in ("token", "sequence"):
            raise ConfigError(f"importance_sampling_level: {self.importance_sampling_level!r} is not token or sequence")
        if self.entropy_coef < 0:
            raise ConfigError(f"entropy_coef must be >= 0, got {self.entropy_coef}")
        if self.max_resample_rounds < 0:
            raise ConfigError(f"max_resample_rounds must be >= 0, got {self.max_resample_rounds}")
        if self.dynamic_sampling and self.filter_zero_std_groups:
            raise ConfigError("dynamic_sampling already trains only on groups with spread: drop filter_zero_std_groups")
        if not 0.0 <= self.top_entropy_quantile <= 1.0:
            raise ConfigError(f"top_entropy_quantile must be in [0, 1], got {self.top_entropy_quantile}")
        self._check_off_policy()

    def _check_off_policy(self) -> None:
        """The correction's mode and bounds, as TRL checks them (C_min < C_max; a truncation needs a bound)."""
        mode, low, high = self.off_policy_correction, self.off_policy_clip_min, self.off_policy_clip_max
        if mode not in OFF_POLICY_SETTINGS:
            raise ConfigError(f"off_policy_correction: {mode!r} is not one of {', '.join(OFF_POLICY_SETTINGS)}")
        for name, bound in (("off_policy_clip_min", low), ("off_policy_clip_max", high)):
            if bound is not None and not (bound >= 0 and math.isfinite(bound)):
                raise ConfigError(f"{name} must be a finite ratio >= 0 or None, got {bound}")
        if low is not None and high is not None and low >= high:
            raise ConfigError(f"off_policy_clip_min ({low}) must be less than off_policy_clip_max ({high})")
        if (mode.endswith("truncate") or mode == "auto") and low is None and high is None:  # auto = token_truncate
            raise ConfigError(f"off_policy_correction={mode} needs off_policy_clip_min or off_policy_clip_max")

    def loss_options(self) -> dict[str, Any]:
        """The keyword arguments of `ecr.rl.loss.grpo_loss` these settings fix."""
        return {
            "loss_type": self.loss_type,
            "importance_sampling_level": self.importance_sampling_level,
            "epsilon_low": self.epsilon_low,
            "epsilon_high": self.epsilon_high,
            "beta": self.beta,
            "use_bias_correction_kl": self.use_bias_correction_kl,
        }

    def off_policy_options(self) -> dict[str, Any]:
        """The keyword arguments of `ecr.rl.off_policy.policy_weights` these settings fix."""
        return {
            "setting": self.off_policy_correction,
            "clip_max": self.off_policy_clip_max,
            "clip_min": self.off_policy_clip_min,
        }

    def check_reference(self, lora: bool) -> None:
        """reference='adapter' disables the LoRA adapter to get the reference: there must be one."""
        if self.reference == "adapter" and not lora:
            raise ConfigError("reference='adapter' needs a LoRA policy (policy.lora.enabled or policy.adapter)")

    @classmethod
    def of(cls, given: GRPOSettings | Mapping[str, Any] | None) -> GRPOSettings:
        return given if isinstance(given, GRPOSettings) else cls(**dict(given or {}))
