"""Entropy controls: the high-entropy token mask (TRL's top_entropy_quantile) and the entropy bonus term."""

from __future__ import annotations

import pytest
import torch

from ecr.errors import ConfigError
from ecr.rl.entropy import entropy_bonus, entropy_term, gathered_entropies, high_entropy_mask

ENT = torch.tensor([[0.1, 2.0, 9.0], [0.5, 1.0, 3.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # active entropies 0.1, 2.0, 0.5, 1.0, 3.0


def test_top_quantile_keeps_the_highest_entropy_active_tokens() -> None:
    # the 0.6 quantile of [0.1, 0.5, 1.0, 2.0, 3.0] (linear interpolation) is 1.4: keeps 2.0 and 3.0
    keep = high_entropy_mask(ENT, MASK, top_quantile=0.4)
    assert keep.tolist() == [[False, True, False], [False, False, True]]  # 9.0 is masked out (padding)
    assert high_entropy_mask(ENT, MASK, 1.0).tolist() == MASK.bool().tolist()  # ρ = 1 keeps every active token
    assert high_entropy_mask(ENT, MASK, 0.0).tolist() == [[False, False, False], [False, False, True]]
    # over every rank: the threshold comes from the pooled entropies
    pooled = torch.tensor([0.1, 2.0, 0.5, 1.0, 3.0, 5.0, 6.0, 7.0])
    assert high_entropy_mask(ENT, MASK, 0.25, pool=pooled).sum() == 0
    assert not high_entropy_mask(ENT, torch.zeros_like(MASK), 0.5).any()
    with pytest.raises(ConfigError, match="top_entropy_quantile must be in"):
        high_entropy_mask(ENT, MASK, 1.5)


def test_entropy_term_is_the_mean_active_entropy_with_the_loss_types_normalisation() -> None:
    ent = ENT.clone().requires_grad_(True)
    term = entropy_term(ent, MASK, "grpo")
    assert term.item() == pytest.approx(6.6 / 5)
    term.backward()
    assert torch.allclose(ent.grad, MASK / 5)
    assert entropy_term(ENT, MASK, "dapo", num_items_in_batch=20).item() == pytest.approx(6.6 / 20)
    with pytest.raises(ConfigError, match="needs num_items_in_batch"):
        entropy_term(ENT, MASK, "dapo")


def test_gathered_entropies_pool_every_ranks_active_tokens() -> None:
    """Two ranks with 5 and 2 active tokens: each pads to 5 with −1, the gather stacks them, the padding goes."""
    other = torch.tensor([7.0, 8.0])

    def all_gather(t: torch.Tensor) -> torch.Tensor:  # what LightningModule.all_gather returns on 2 ranks
        if t.dtype == torch.long or t.numel() == 1 and t.dtype != torch.float32:
            return torch.stack([t, torch.tensor([2])])
        return torch.stack([t, torch.cat([other, torch.full((t.numel() - 2,), -1.0)])])

    pool = gathered_entropies(ENT, MASK, all_gather)
    assert sorted(pool.tolist()) == pytest.approx([0.1, 0.5, 1.0, 2.0, 3.0, 7.0, 8.0])


def test_the_bonus_is_coef_times_the_trained_tokens_entropy_and_zero_when_off() -> None:
    keep = high_entropy_mask(ENT, MASK, 0.4).to(MASK.dtype)  # the tokens of 2.0 and 3.0
    assert entropy_bonus(ENT, MASK, None, 0.0, "grpo").item() == 0.0
    assert entropy_bonus(ENT, MASK, None, 0.5, "grpo").item() == pytest.approx(0.5 * 6.6 / 5)
    assert entropy_bonus(ENT, MASK, keep, 0.5, "grpo").item() == pytest.approx(0.5 * 5.0 / 2)


def test_with_dapo_and_the_entropy_mask_the_bonus_is_still_the_kept_tokens_mean() -> None:
    """The bonus is coef · H̄ of the trained tokens for every loss_type (TRL 1.16: "a mean over the tokens it acts
    on"). Under dapo it is weighted by this micro-batch's share of the step's active tokens (Σ m / num_items), so
    the micro-batches of a step sum to a weighted mean of their H̄: here 5 of 20 tokens -> 0.25 · H̄. It was
    Σ_kept H / num_items, ρ (the kept fraction) times too small."""
    keep = high_entropy_mask(ENT, MASK, 0.4).to(MASK.dtype)  # the tokens of 2.0 and 3.0: H̄ = 2.5
    ent = ENT.clone().requires_grad_(True)
    bonus = entropy_bonus(ent, MASK, keep, 0.5, "dapo", num_items_in_batch=20)
    assert bonus.item() == pytest.approx(0.5 * 2.5 * 5 / 20)
    bonus.backward()
    torch.testing.assert_close(ent.grad, 0.5 * MASK * keep / 2 * 5 / 20)
    # one micro-batch holding the whole step: the same bonus as every other loss type
    for loss_type in ("grpo", "bnpo", "dr_grpo"):
        dapo = entropy_bonus(ENT, MASK, keep, 0.5, "dapo", num_items_in_batch=5)
        assert dapo.item() == pytest.approx(entropy_bonus(ENT, MASK, keep, 0.5, loss_type).item())
