"""DAPO's truncation mask: a completion that hit `max_new_tokens` without EOS leaves the loss
(`mask_truncated_completions`), since its reward judges an unfinished answer. The completion mask itself
(`ecr.models.completions.completion_mask`) is the models layer's.
"""

from __future__ import annotations

import torch


def mask_truncated(mask: torch.Tensor, truncated: torch.Tensor) -> torch.Tensor:
    """`mask` [N, C] with the rows flagged in `truncated` [N] zeroed (same dtype as `mask`)."""
    if mask.dim() != 2 or truncated.shape != mask.shape[:1]:
        raise ValueError(f"mask must be [N, C] and truncated [N], got {tuple(mask.shape)} and {tuple(truncated.shape)}")
    keep = ~truncated.bool()  # [N]
    return mask * keep[:, None].to(mask.dtype) if mask.dtype != torch.bool else mask & keep[:, None]
