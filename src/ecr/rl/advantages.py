"""Group-relative advantages (docs/method.md §4).

Rewards arrive flat, [B·G], with the G completions of one prompt contiguous (the layout of
`EncodedPrompt.repeat_interleave`). Each completion's advantage is its reward minus its group's mean,
optionally scaled by a standard deviation:

- `scale="group"`: / (unbiased std of the group + eps), the paper's GRPO advantage;
- `scale="batch"`: / (unbiased std of the whole batch + eps), robust when a group's spread is tiny;
- `scale="none"`: no scaling (Dr. GRPO), which removes the question-difficulty bias of the std.

A group whose rewards are all equal carries no learning signal: its advantages are exactly 0 (never NaN,
never rounding noise divided by eps), and so is every group of size 1.
"""

from __future__ import annotations

from typing import Literal

import torch

from ecr.errors import ConfigError

AdvantageScale = Literal["group", "batch", "none"]
SCALES: tuple[str, ...] = ("group", "batch", "none")


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Validate and view rewards [B·G] as [B, G] (float). Bad options are `ConfigError`s (a ValueError)."""
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
        raise ConfigError(f"group_size must be an int >= 1, got {group_size!r}")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B*G], got shape {tuple(rewards.shape)}")
    if rewards.numel() % group_size:
        raise ValueError(
            f"rewards has {rewards.numel()} elements, not divisible by group_size={group_size}: "
            "each prompt needs exactly group_size contiguous completions"
        )
    if not rewards.is_floating_point():
        rewards = rewards.float()
    return rewards.view(-1, group_size)  # [B, G]


def zero_std_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Which groups have rewards with zero spread, BoolTensor [B].

    Exact equality (max == min), not std < tol, so that it agrees with the zeros `group_advantages` gives.
    Such groups contribute no policy gradient: `filter_zero_std_groups` drops them and `frac_zero_std` logs them.
    """
    grouped = _grouped(rewards, group_size)  # [B, G]
    return grouped.amax(dim=1) == grouped.amin(dim=1)  # [B]


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    *,
    scale: AdvantageScale = "group",
    eps: float = 1e-4,
) -> torch.Tensor:
    """Advantages [B·G] from rewards [B·G]: (r − group mean), scaled as `scale` says (module docstring)."""
    if scale not in SCALES:
        raise ConfigError(f"scale must be one of {SCALES}, got {scale!r}")
    if eps < 0:
        raise ConfigError(f"eps must be >= 0, got {eps}")
    grouped = _grouped(rewards, group_size)  # [B, G]
    centred = grouped - grouped.mean(dim=1, keepdim=True)  # [B, G]
    if scale == "group":
        # Unbiased std of one element is NaN; such groups are zero-spread and zeroed below anyway.
        std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(centred[:, :1])  # [B, 1]
        centred = centred / (std + eps)
    elif scale == "batch":
        flat = grouped.flatten()  # [B·G]
        std = flat.std() if flat.numel() > 1 else flat.new_zeros(())  # []
        centred = centred / (std + eps)
    flat_groups = grouped.amax(dim=1, keepdim=True) == grouped.amin(dim=1, keepdim=True)  # [B, 1]
    return torch.where(flat_groups, torch.zeros_like(centred), centred).reshape(-1)  # [B·G]
