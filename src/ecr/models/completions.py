"""Completion masks: which generated tokens belong to a completion (docs/method.md §4).

A completion ends at its first EOS, which counts (the policy must learn to stop). HF `generate` fills a
finished row with the pad id up to the longest row, and the pad id is often an EOS id or an ordinary token,
so the mask is built from the position of the first EOS, never from `ids != pad`. A row with no EOS hit
`max_new_tokens`: it is flagged `truncated` and all its tokens count (GRPO's `ecr.rl.masks.mask_truncated`
can drop it from the loss). Models layer: prediction and GRPO both read completions through it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def completion_mask(
    completion_ids: torch.Tensor,
    eos_token_id: int | Sequence[int],
    pad_token_id: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask [N, C] bool, truncated [N] bool) for sampled ids [N, C] (prompt excluded).

    `mask` is True up to and including the first token in `eos_token_id` (an id or several, e.g. Qwen's
    `<|im_end|>` and `<|endoftext|>`); rows without one are `truncated` and fully True. `pad_token_id` is
    optional and only matters for rows WITHOUT an EOS: their trailing pads are padding added when completions
    of different lengths were stacked (separate `generate` calls), so they are masked out (such a row is still
    truncated: it stopped at its own token limit). With `None`, pads are never looked at.
    """
    if completion_ids.dim() != 2:
        raise ValueError(f"completion_ids must be [N, C], got shape {tuple(completion_ids.shape)}")
    eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    if not eos_ids:
        raise ValueError("eos_token_id must name at least one token id")
    eos = torch.tensor(eos_ids, dtype=completion_ids.dtype, device=completion_ids.device)  # [E]
    is_eos = torch.isin(completion_ids, eos)  # [N, C]
    # Number of EOS strictly before position t: 0 exactly up to and including the first EOS.
    eos_before = is_eos.long().cumsum(dim=1) - is_eos.long()  # [N, C]
    mask = eos_before == 0  # [N, C]
    truncated = ~is_eos.any(dim=1)  # [N]
    if pad_token_id is not None and pad_token_id not in eos_ids:
        not_pad = completion_ids != pad_token_id  # [N, C]
        # Keep everything up to the last non-pad token of the row (reverse cumulative "any").
        upto_last_real = not_pad.flip(1).long().cummax(dim=1).values.flip(1).bool()  # [N, C]
        mask = torch.where(truncated[:, None], upto_last_real, mask)
    return mask, truncated
