"""Truncated importance sampling against hand-computed weights, for each of TRL's four modes."""

from __future__ import annotations

import math
from typing import Any, cast

import pytest
import torch

from ecr.errors import ConfigError
from ecr.rl.loss import grpo_loss
from ecr.rl.off_policy import CorrectionMode, policy_weights, resolve_correction, sampler_correction

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


def test_the_setting_resolves_to_trls_default_only_with_sampler_logprobs() -> None:
    assert resolve_correction("auto", has_sampler_logp=True) == "token_truncate"  # a filter's mismatch
    assert resolve_correction("auto", has_sampler_logp=False) is None  # π's own samples: nothing to correct
    assert resolve_correction("none", has_sampler_logp=True) is None
    assert resolve_correction("token_truncate", has_sampler_logp=True) == "token_truncate"
    assert resolve_correction("token_truncate", has_sampler_logp=False) is None
    with pytest.raises(ConfigError, match="off_policy_correction must be one of"):
        resolve_correction(cast(Any, "sequence"), has_sampler_logp=True)


def test_policy_weights_multiply_the_correction_by_the_entropy_mask_and_log_its_stats() -> None:
    old, sampler, mask = logps()
    keep = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]], dtype=F64)
    weights, logged = policy_weights(old, sampler, mask, keep, setting="token_mask", clip_max=3.0)
    # token_mask's weights [[0, 0.5, 1], [1, 2, 0.25]] times keep
    assert torch.allclose(weights, torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0]], dtype=F64))
    assert set(logged) == {f"train/off_policy/{k}" for k in ("mean", "min", "max", "masked_fraction",
                                                              "mean_abs_logp_diff")}  # fmt: skip
    assert logged["train/off_policy/masked_fraction"].item() == pytest.approx(0.2)
    assert logged["train/off_policy/mean"].item() == pytest.approx((0 + 0.5 + 1 + 2 + 0.25) / 5)
    # no sampler log-probs (or "none"): the entropy mask alone, nothing logged
    assert policy_weights(old, None, mask, keep)[0] is keep and policy_weights(old, None, mask, keep)[1] == {}
    assert policy_weights(old, sampler, mask, None, setting="none") == (None, {})
    auto, _ = policy_weights(old, sampler, mask, None)  # auto = token_truncate, C_max 3
    assert torch.allclose(auto, torch.tensor([[3.0, 0.5, 1.0], [1.0, 2.0, 0.25]], dtype=F64))
    with pytest.raises(ValueError, match="needs the sampling-time log-probs"):
        policy_weights(None, sampler, mask)


def _reference_loss(logp, old, ref, adv, mask, w, beta, eps):
    """The clipped GRPO loss (`grpo` normalisation) with each token's policy term weighted by w, by hand."""
    total = 0.0
    for i in range(logp.shape[0]):
        row, count = 0.0, 0.0
        for t in range(logp.shape[1]):
            if not mask[i, t]:
                continue
            ratio = torch.exp(logp[i, t] - old[i, t])
            clipped = ratio.clamp(1 - eps, 1 + eps)
            policy = -torch.minimum(ratio * adv[i], clipped * adv[i])
            kl = torch.exp(ref[i, t] - logp[i, t]) - (ref[i, t] - logp[i, t]) - 1
            row, count = row + w[i, t] * policy + beta * kl, count + 1
        total = total + row / max(count, 1.0)
    return total / logp.shape[0]


@pytest.mark.parametrize("mode", ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"])
def test_the_corrected_loss_values_and_gradients_equal_the_formula(mode: CorrectionMode) -> None:
    """Off-policy (logp ≠ old, some ratios clipped), β > 0: the loss with the correction's weights and its
    gradient equal the hand-written formula's; the gradient of an unclipped token's policy term is
    −w·ρ·A / (its completion's tokens · N), that of a clipped one 0 (KL aside)."""
    old, sampler, mask = logps()
    weights, _ = sampler_correction(old, sampler, mask, mode=mode, clip_max=3.0)
    # ρ = e^shift; clipped: row 0 (A > 0) token 0 (ρ 1.35 > 1.2), row 1 (A < 0) token 2 (ρ 0.67 < 0.8)
    shift = torch.tensor([[0.3, -0.5, 0.0], [0.3, 0.05, -0.4]], dtype=F64)
    logp = (old + shift).requires_grad_(True)
    ref = old - 0.2
    adv = torch.tensor([1.5, -0.7], dtype=F64)
    loss, _ = grpo_loss(logp, old, ref, adv, mask, loss_type="grpo", beta=0.1, policy_weights=weights)
    want = _reference_loss(logp, old, ref, adv, mask, weights, beta=0.1, eps=0.2)
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)
    (grad,) = torch.autograd.grad(loss, logp)
    (want_grad,) = torch.autograd.grad(want, logp)
    assert torch.allclose(grad, want_grad, atol=1e-12)
    ratio = shift.exp()
    clipped = ((ratio < 0.8) & (adv[:, None] < 0)) | ((ratio > 1.2) & (adv[:, None] > 0))
    assert clipped.tolist() == [[True, False, False], [False, False, True]]
    kl_grad = 0.1 * (1 - torch.exp(ref - logp.detach()))  # d k3 / d logp
    by_hand = (~clipped * -weights * ratio * adv[:, None] + kl_grad) * mask / mask.sum(1, keepdim=True) / 2
    assert torch.allclose(grad, by_hand, atol=1e-12)
