"""Completion masks: up to and including the first EOS, truncation when there is none, pads never trusted."""

from __future__ import annotations

import pytest
import torch

from ecr.models.completions import completion_mask
from ecr.rl.masks import mask_truncated


def test_first_eos_counts_and_rows_without_eos_are_truncated() -> None:
    ids = torch.tensor(
        [
            [5, 6, 2, 0, 0],  # EOS at 2, then pads
            [2, 0, 0, 0, 0],  # EOS first: only the EOS counts
            [5, 2, 7, 2, 0],  # a second EOS after the first does not extend the completion
            [5, 6, 7, 8, 9],  # no EOS: hit max_new_tokens, every token counts
        ]
    )
    mask, truncated = completion_mask(ids, eos_token_id=2)
    assert mask.dtype == torch.bool
    assert mask.int().tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert truncated.tolist() == [False, False, False, True]


def test_several_eos_ids_and_pad_equal_to_eos() -> None:
    ids = torch.tensor([[5, 3, 0, 0], [5, 6, 2, 2], [5, 6, 7, 8]])
    mask, truncated = completion_mask(ids, eos_token_id=[2, 3], pad_token_id=2)
    assert mask.int().tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    assert truncated.tolist() == [False, False, True]


def test_pad_id_is_never_used_to_cut_a_completion() -> None:
    # Token 0 is the pad id but was genuinely sampled before the EOS: it counts.
    ids = torch.tensor([[5, 0, 0, 2, 0], [4, 0, 4, 4, 4]])
    mask, truncated = completion_mask(ids, eos_token_id=2, pad_token_id=0)
    assert mask.int().tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert truncated.tolist() == [False, True]
    mask, _ = completion_mask(ids, eos_token_id=2)
    assert mask.int().tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]


def test_pad_id_drops_trailing_stacking_pads_of_truncated_rows() -> None:
    ids = torch.tensor([[5, 6, 0, 0], [5, 2, 0, 0]])  # row 0 came from a shorter generate call
    mask, truncated = completion_mask(ids, eos_token_id=2, pad_token_id=0)
    assert mask.int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0]]
    assert truncated.tolist() == [True, False]


def test_mask_truncated_keeps_the_dtype() -> None:
    mask, truncated = completion_mask(torch.tensor([[1, 2, 0], [1, 1, 1]]), eos_token_id=2)
    assert mask_truncated(mask, truncated).int().tolist() == [[1, 1, 0], [0, 0, 0]]
    as_float = mask_truncated(mask.float(), truncated)
    assert as_float.dtype == torch.float32 and as_float.tolist() == [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        completion_mask(torch.tensor([1, 2]), eos_token_id=2)
    with pytest.raises(ValueError, match="at least one"):
        completion_mask(torch.tensor([[1, 2]]), eos_token_id=[])
    with pytest.raises(ValueError, match="truncated"):
        mask_truncated(torch.ones(2, 3), torch.zeros(3, dtype=torch.bool))
