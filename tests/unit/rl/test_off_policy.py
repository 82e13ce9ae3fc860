"""Truncated importance sampling against hand-computed weights, for each of TRL's four modes."""

from __future__ import annotations

import math

import pytest
import torch

from ecr.errors import ConfigError
from ecr.rl.loss import grpo_loss
from ecr.rl.off_policy import sampler_correction

F64 = torch.float64
# per-token ratios π_old/q of two completions; row 0's last token is masked
TOKEN_RATIOS = [[4.0, 0.5, 7.0], [1.0, 2.0, 0.25]]
MASK = [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]


def logps() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    old = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -0.7]], dtype=F64)
    sampler = old - torch.tensor(TOKEN_RATIOS, dtype=F64).log()
    return old, sampler, torch.tensor(MASK, dtype=F64)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        # clamp to [0, 3]; the masked token's weight is exp(0) = 1 (it never counts)
        ("token_truncate", [[3.0, 0.5, 1.0], [1.0, 2.0, 0.25]]),
        # outside [−inf, 3] -> 0
        ("token_mask", [[0.0, 0.5, 1.0], [1.0, 2.0, 0.25]]),
        # one ratio per completion: row 0 4·0.5 = 2, row 1 1·2·0.25 = 0.5
        ("sequence_truncate", [[2.0] * 3, [0.5] * 3]),
        ("sequence_mask", [[2.0] * 3, [0.5] * 3]),
    ],
)
def test_weights_per_mode(mode: str, expected: list[list[float]]) -> None:
    old, sampler, mask = logps()
    weights, stats = sampler_correction(old, sampler, mask, mode=mode, clip_max=3.0)  # type: ignore[arg-type]
    assert torch.allclose(weights, torch.tensor(expected, dtype=F64))
    active = [w for row, mrow in zip(expected, MASK, strict=True) for w, m in zip(row, mrow, strict=True) if m]
    assert stats.mean.item() == pytest.approx(sum(active) / 5)
    assert stats.min.item() == pytest.approx(min(active)) and stats.max.item() == pytest.approx(max(active))
    assert stats.masked_fraction.item() == pytest.approx(0.2 if mode == "token_mask" else 0.0)


def test_clip_min_masks_and_truncates_from_below() -> None:
    old, sampler, mask = logps()
    weights, stats = sampler_correction(old, sampler, mask, mode="sequence_mask", clip_max=None, clip_min=1.0)
    assert torch.allclose(weights, torch.tensor([[2.0] * 3, [0.0] * 3], dtype=F64))
    assert stats.masked_fraction.item() == pytest.approx(3 / 5)
    weights, _ = sampler_correction(old, sampler, mask, mode="token_truncate", clip_max=None, clip_min=1.0)
    assert torch.allclose(weights, torch.tensor([[4.0, 1.0, 1.0], [1.0, 2.0, 1.0]], dtype=F64))
    assert math.isclose(_.mean_abs_logp_diff.item(), sum(abs(math.log(r)) for r in (4, 0.5, 1, 2, 0.25)) / 5)


def test_the_weights_multiply_the_policy_term_only() -> None:
    old, sampler, mask = logps()
    weights, _ = sampler_correction(old, sampler, mask, mode="token_truncate")
    logp = old.clone().requires_grad_(True)  # on-policy w.r.t. π_old: ratio 1, no clipping
    ref = old - 0.1
    adv = torch.tensor([1.0, -2.0], dtype=F64)
    loss, _ = grpo_loss(logp, old, ref, adv, mask, loss_type="bnpo", beta=0.5, policy_weights=weights)
    kl = torch.exp(ref - old) - (ref - old) - 1
    expected = ((-adv[:, None] * weights + 0.5 * kl) * mask).sum() / mask.sum()
    assert loss.item() == pytest.approx(expected.item())


def test_bad_settings_are_refused() -> None:
    old, sampler, mask = logps()
    with pytest.raises(ConfigError, match="off_policy_correction must be one of"):
        sampler_correction(old, sampler, mask, mode="token_clip")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="clip_min 2.0 > clip_max 1.0"):
        sampler_correction(old, sampler, mask, clip_max=1.0, clip_min=2.0)
