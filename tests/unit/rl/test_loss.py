"""The GRPO loss against hand-computed values and gradients, for every loss_type, both clip sides and β."""

from __future__ import annotations

import math

import pytest
import torch

from ecr.errors import ConfigError
from ecr.rl.loss import accumulation_scale, grpo_loss

F64 = torch.float64

# Two completions of 3 tokens; the last token of row 0 is after its EOS (masked out).
# Ratios ρ = exp(logp − old), A = [1, −2], ε_low = ε_high = 0.2 (clip range [0.8, 1.2]):
#   row 0 (A = +1): ρ 1.5 -> high clip, l = −1.2 | ρ 0.5 -> not clipped (A > 0), l = −0.5 | masked
#   row 1 (A = −2): ρ 0.5 -> low clip, l = −(0.8·−2) = 1.6 | ρ 1.5 -> not clipped (A < 0), l = 3.0 | ρ 1.1, l = 2.2
RATIOS = [[1.5, 0.5, 0.9], [0.5, 1.5, 1.1]]
MASK = [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
ADV = [1.0, -2.0]
# Σ active l = (−1.2 − 0.5) + (1.6 + 3.0 + 2.2) = −1.7 + 6.8 = 5.1 over 5 active tokens.
EXPECTED = {
    "grpo": (-1.7 / 2 + 6.8 / 3) / 2,  # 0.708333…
    "bnpo": 5.1 / 5,
    "dr_grpo": 5.1 / (2 * 4),  # max_completion_length = 4
    "dapo": 5.1 / 10,  # num_items_in_batch = 10
}
# dl/dlogp = −A·ρ where not clipped and active, else 0; then the normalisation's weight.
TOKEN_GRAD = [[0.0, -0.5, 0.0], [0.0, 3.0, 2.2]]
WEIGHTS = {"grpo": [[1 / 4], [1 / 6]], "bnpo": [[1 / 5]], "dr_grpo": [[1 / 8]], "dapo": [[1 / 10]]}


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -0.7]], dtype=F64, requires_grad=True)
    old = logp.detach() - torch.tensor(RATIOS, dtype=F64).log()
    return logp, old, torch.tensor(ADV, dtype=F64), torch.tensor(MASK, dtype=F64)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_values_gradients_and_clip_stats(loss_type: str) -> None:
    logp, old, adv, mask = inputs()
    loss, stats = grpo_loss(
        logp, old, None, adv, mask, loss_type=loss_type, beta=0.0, max_completion_length=4, num_items_in_batch=10
    )
    torch.testing.assert_close(loss, torch.tensor(EXPECTED[loss_type], dtype=F64))
    loss.backward()
    expected_grad = torch.tensor(TOKEN_GRAD, dtype=F64) * torch.tensor(WEIGHTS[loss_type], dtype=F64)
    torch.testing.assert_close(logp.grad, expected_grad)
    # 5 active tokens: one low clip (row 1 t0), one high clip (row 0 t0); ρ mean (1.5+.5+.5+1.5+1.1)/5.
    assert stats.clip_low_fraction.item() == pytest.approx(0.2)
    assert stats.clip_high_fraction.item() == pytest.approx(0.2)
    assert stats.clip_region_fraction.item() == pytest.approx(0.4)
    assert stats.mean_ratio.item() == pytest.approx(1.02)
    assert stats.mean_kl.item() == 0.0 and stats.num_tokens.item() == 5.0
    assert not stats.mean_ratio.requires_grad


def test_asymmetric_clip_range() -> None:
    # ε_high = 0.6 (clip range [0.8, 1.6]): ρ 1.5 with A > 0 is no longer clipped, l = −1.5.
    logp, old, adv, mask = inputs()
    loss, stats = grpo_loss(logp, old, None, adv, mask, loss_type="bnpo", beta=0.0, epsilon_high=0.6)
    torch.testing.assert_close(loss, torch.tensor((5.1 - 0.3) / 5, dtype=F64))  # −1.2 became −1.5
    assert stats.clip_high_fraction.item() == 0.0 and stats.clip_low_fraction.item() == pytest.approx(0.2)


def test_kl_term_value_and_gradient() -> None:
    # ρ = 1 everywhere; ref − logp = [[ln2, 0], [−ln2, ln2]] -> k3 = e^d − d − 1 = [[.306853, 0], [.193147, .306853]].
    logp = torch.tensor([[-1.0, -1.0], [-2.0, -2.0]], dtype=F64, requires_grad=True)
    ref = logp.detach() + torch.tensor([[math.log(2), 0.0], [-math.log(2), math.log(2)]], dtype=F64)
    adv = torch.tensor([1.0, -1.0], dtype=F64)
    loss, stats = grpo_loss(logp, logp.detach(), ref, adv, torch.ones(2, 2), beta=0.1)
    k = 1 - math.log(2)  # 0.306853; e^(−ln2) + ln2 − 1 = 0.5 − 0.306853… = 0.193147
    per_row = [(-1 + 0.1 * k - 1) / 2, (1 + 0.1 * (0.5 - k) + 1 + 0.1 * k) / 2]
    torch.testing.assert_close(loss, torch.tensor(sum(per_row) / 2, dtype=F64))
    assert stats.mean_kl.item() == pytest.approx((k + 0.0 + (0.5 - k) + k) / 4)
    loss.backward()
    # d/dlogp: −A·ρ + β·(1 − e^d), weight 1/(2·2).
    expected = torch.tensor([[-1 - 0.1, -1.0], [1 + 0.05, 1 - 0.1]], dtype=F64) / 4
    torch.testing.assert_close(logp.grad, expected)


def test_one_update_per_rollout_has_the_papers_gradient() -> None:
    torch.manual_seed(0)
    logp0 = torch.randn(6, 5, dtype=F64) - 1.0
    ref = logp0 + 0.3 * torch.randn(6, 5, dtype=F64)
    adv = torch.randn(6, dtype=F64)
    mask = (torch.arange(5)[None, :] < torch.tensor([5, 3, 1, 4, 2, 5])[:, None]).to(F64)
    beta = 0.04

    logp = logp0.clone().requires_grad_(True)
    loss, stats = grpo_loss(logp, logp.detach(), ref, adv, mask, beta=beta)
    loss.backward()

    paper = logp0.clone().requires_grad_(True)
    kl = torch.exp(ref - paper) - (ref - paper) - 1
    per_token = -(torch.exp(paper - paper.detach()) * adv[:, None] - beta * kl)
    paper_loss = ((per_token * mask).sum(1) / mask.sum(1)).mean()
    paper_loss.backward()

    torch.testing.assert_close(loss, paper_loss)
    torch.testing.assert_close(logp.grad, paper.grad)
    assert stats.clip_region_fraction.item() == 0.0 and stats.mean_ratio.item() == 1.0


def test_clamps_keep_extreme_ratios_finite() -> None:
    logp = torch.tensor([[0.0]], requires_grad=True)
    old = torch.tensor([[-100.0]])  # ρ = e^100 = inf in float32
    adv = torch.tensor([-1.0])
    loss, _ = grpo_loss(logp, old, None, adv, torch.ones(1, 1), beta=0.0)
    assert torch.isinf(loss)
    loss, _ = grpo_loss(logp, old, None, adv, torch.ones(1, 1), beta=0.0, log_ratio_clamp=20.0)
    torch.testing.assert_close(loss, torch.tensor(math.exp(20.0)))
    loss.backward()
    assert logp.grad.item() == 0.0  # beyond the clamp the term carries no gradient
    ref = torch.tensor([[100.0]])
    loss, stats = grpo_loss(logp.detach(), logp.detach(), ref, adv, torch.ones(1, 1), beta=1.0, kl_clamp=10.0)
    assert stats.mean_kl.item() == pytest.approx(math.exp(10.0) - 11.0, rel=1e-5)


def random_batch(n: int = 8, c: int = 6) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(1)
    logp = torch.randn(n, c, dtype=F64) - 1.0
    old = logp + 0.3 * torch.randn(n, c, dtype=F64)
    ref = logp + 0.3 * torch.randn(n, c, dtype=F64)
    adv = torch.randn(n, dtype=F64)
    mask = (torch.arange(c)[None, :] < torch.randint(1, c + 1, (n,))[:, None]).to(F64)
    return logp, old, ref, adv, mask


def accumulated(loss_type: str, parts: list[slice], num_items: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ over micro-batches of accumulation_scale · loss, and the summed gradient, as a training loop does."""
    logp0, old, ref, adv, mask = random_batch()
    logp = logp0.clone().requires_grad_(True)
    total = torch.zeros((), dtype=F64)
    for part in parts:
        rest = (t[part] for t in (old, ref, adv, mask))
        loss, _ = grpo_loss(logp[part], *rest, loss_type=loss_type, num_items_in_batch=num_items)
        total = total + accumulation_scale(loss_type, len(parts)) * loss
    total.backward()
    return total.detach(), logp.grad


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_micro_batches_accumulate_to_the_full_batch(loss_type: str) -> None:
    num_items = float(random_batch()[4].sum()) if loss_type == "dapo" else None
    full, full_grad = accumulated(loss_type, [slice(0, 8)], num_items)
    split, split_grad = accumulated(loss_type, [slice(0, 4), slice(4, 8)], num_items)
    torch.testing.assert_close(split, full)
    torch.testing.assert_close(split_grad, full_grad)


def test_bnpo_micro_batches_do_not_accumulate_to_the_full_batch() -> None:
    # Why dapo exists: bnpo normalises by each micro-batch's own token count.
    full, _ = accumulated("bnpo", [slice(0, 8)], None)
    split, _ = accumulated("bnpo", [slice(0, 4), slice(4, 8)], None)
    assert not torch.isclose(split, full)


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_ddp_averaging_with_accumulation_scale_gives_the_full_batch_gradient(loss_type: str) -> None:
    # A shared parameter w (logp = logp0 + w) stands for the model; 2 ranks × 2 micro-batches of 2 rows.
    logp0, old, ref, adv, mask = random_batch()
    num_items = mask.sum() if loss_type == "dapo" else None

    def grad_of(rows: list[slice], num_micro_batches: int, world_size: int) -> torch.Tensor:
        w = torch.zeros(6, dtype=F64, requires_grad=True)
        for part in rows:
            rest = (t[part] for t in (old, ref, adv, mask))
            loss, _ = grpo_loss(logp0[part] + w, *rest, loss_type=loss_type, num_items_in_batch=num_items)
            (accumulation_scale(loss_type, num_micro_batches, world_size) * loss).backward()
        return w.grad

    rank0 = grad_of([slice(0, 2), slice(2, 4)], 2, 2)
    rank1 = grad_of([slice(4, 6), slice(6, 8)], 2, 2)
    torch.testing.assert_close((rank0 + rank1) / 2, grad_of([slice(0, 8)], 1, 1))  # DDP's all-reduce mean


def test_accumulation_scale() -> None:
    assert accumulation_scale("grpo", 4) == 0.25
    assert accumulation_scale("bnpo", 2, world_size=8) == 0.5
    assert accumulation_scale("dr_grpo", 1) == 1.0
    assert accumulation_scale("dapo", 4) == 1.0
    assert accumulation_scale("dapo", 4, world_size=2) == 2.0
    with pytest.raises(ConfigError, match="loss_type"):
        accumulation_scale("ppo", 1)  # type: ignore[arg-type]


def test_argument_errors() -> None:
    logp, old, adv, mask = inputs()
    with pytest.raises(ConfigError, match="max_completion_length"):
        grpo_loss(logp, old, None, adv, mask, loss_type="dr_grpo", beta=0.0)
    with pytest.raises(ConfigError, match="num_items_in_batch"):
        grpo_loss(logp, old, None, adv, mask, loss_type="dapo", beta=0.0)
    with pytest.raises(ConfigError, match="num_items_in_batch"):
        grpo_loss(logp, old, None, adv, mask, loss_type="dapo", beta=0.0, num_items_in_batch=-1)
    with pytest.raises(ConfigError, match="needs ref_logp"):
        grpo_loss(logp, old, None, adv, mask, beta=0.04)
    with pytest.raises(ConfigError, match="ref_logp=None"):
        grpo_loss(logp, old, old, adv, mask, beta=0.0)
    with pytest.raises(ConfigError, match="loss_type"):
        grpo_loss(logp, old, None, adv, mask, loss_type="sum", beta=0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(logp, old, None, adv[:1], mask, beta=0.0)
    with pytest.raises(ValueError, match="mask"):
        grpo_loss(logp, old, None, adv, mask[:, :2], beta=0.0)


# GSPO (importance_sampling_level="sequence"): one ratio per completion, the geometric mean of its active tokens'
# ratios: row 0 sqrt(1.5 · 0.5) = sqrt(0.75) ≈ 0.866, row 1 (0.5 · 1.5 · 1.1)^(1/3) ≈ 0.938; both inside [0.8, 1.2],
# so no clipping: every active token of row i has l = −ρ_i·A_i.
SEQ_RATIO = [math.sqrt(0.75), 0.825 ** (1 / 3)]


def test_sequence_level_uses_one_ratio_per_completion() -> None:
    logp, old, adv, mask = inputs()
    r0, r1 = SEQ_RATIO
    row0, row1 = -r0 * 1.0, -r1 * -2.0  # per active token
    expected = {"grpo": (row0 + row1) / 2, "bnpo": (2 * row0 + 3 * row1) / 5}
    for loss_type, value in expected.items():
        loss, stats = grpo_loss(logp, old, None, adv, mask, loss_type=loss_type, beta=0.0,
                                importance_sampling_level="sequence")  # fmt: skip
        assert loss.item() == pytest.approx(value, rel=1e-12), loss_type
        assert stats.mean_ratio.item() == pytest.approx((2 * r0 + 3 * r1) / 5, rel=1e-12)
        assert stats.clip_region_fraction.item() == 0.0
    loss, _ = grpo_loss(logp, old, None, adv, mask, loss_type="grpo", beta=0.0, importance_sampling_level="sequence")
    loss.backward()
    # d/dlogp_ij of (1/N) Σ_i −ρ_i A_i, with dρ_i/dlogp_ij = ρ_i · m_ij / |m_i|
    grad = [[-0.5 * 1.0 * r0 / 2, -0.5 * 1.0 * r0 / 2, 0.0], [-0.5 * -2.0 * r1 / 3] * 3]
    assert torch.allclose(logp.grad, torch.tensor(grad, dtype=F64), rtol=1e-12, atol=1e-15)


def test_sequence_level_clips_the_whole_completion() -> None:
    """Token ratios 2.0 and 1.125 (A > 0): per token only the first is clipped; the sequence ratio
    sqrt(2.25) = 1.5 > 1.2 is clipped, so the whole completion gets no policy gradient."""
    logp = torch.tensor([[-1.0, -1.0]], dtype=F64, requires_grad=True)
    old = logp.detach() - torch.tensor([[2.0, 1.125]], dtype=F64).log()
    adv, mask = torch.tensor([1.0], dtype=F64), torch.ones(1, 2, dtype=F64)
    grads = {}
    for level in ("token", "sequence"):
        lp = logp.detach().clone().requires_grad_(True)
        loss, stats = grpo_loss(lp, old, None, adv, mask, beta=0.0, importance_sampling_level=level)
        loss.backward()
        grads[level] = lp.grad
        if level == "sequence":
            assert loss.item() == pytest.approx(-1.2) and stats.clip_high_fraction.item() == 1.0
    assert grads["token"][0, 0] == 0 and grads["token"][0, 1] != 0
    assert torch.equal(grads["sequence"], torch.zeros_like(logp))


def test_sequence_and_token_level_agree_on_one_token_completions_with_kl() -> None:
    torch.manual_seed(0)
    logp = torch.randn(4, 1, dtype=F64, requires_grad=True)
    old, ref = logp.detach() + 0.3 * torch.randn(4, 1, dtype=F64), logp.detach() + 0.1
    adv, mask = torch.randn(4, dtype=F64), torch.ones(4, 1, dtype=F64)
    out = {}
    for level in ("token", "sequence"):
        lp = logp.detach().clone().requires_grad_(True)
        loss, _ = grpo_loss(lp, old, ref, adv, mask, beta=0.04, importance_sampling_level=level)
        loss.backward()
        out[level] = (loss.detach(), lp.grad)
    assert torch.allclose(out["token"][0], out["sequence"][0]) and torch.allclose(out["token"][1], out["sequence"][1])


def test_an_unknown_importance_sampling_level_is_refused() -> None:
    logp, old, adv, mask = inputs()
    with pytest.raises(ConfigError, match="importance_sampling_level must be one of"):
        grpo_loss(logp, old, None, adv, mask, beta=0.0, importance_sampling_level="segment")  # type: ignore[arg-type]


def test_bias_corrected_kl_changes_the_gradient_on_policy() -> None:
    """`use_bias_correction_kl` (TRL 1.16's default): the KL term is ρ·k3. On-policy ρ = 1, so the value is the
    same as `test_kl_term_value_and_gradient`'s, but dρ/dlogp = ρ adds β·k3 to each token's gradient."""
    logp = torch.tensor([[-1.0, -1.0], [-2.0, -2.0]], dtype=F64, requires_grad=True)
    ref = logp.detach() + torch.tensor([[math.log(2), 0.0], [-math.log(2), math.log(2)]], dtype=F64)
    adv = torch.tensor([1.0, -1.0], dtype=F64)
    plain, _ = grpo_loss(logp, logp.detach(), ref, adv, torch.ones(2, 2), beta=0.1)
    (plain_grad,) = torch.autograd.grad(plain, logp)
    loss, _ = grpo_loss(logp, logp.detach(), ref, adv, torch.ones(2, 2), beta=0.1, use_bias_correction_kl=True)
    loss.backward()
    k = 1 - math.log(2)
    torch.testing.assert_close(loss, plain.detach())
    k3 = torch.tensor([[k, 0.0], [0.5 - k, k]], dtype=F64)
    torch.testing.assert_close(logp.grad, plain_grad + 0.1 * k3 / 4)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_bias_corrected_kl_off_policy_matches_the_formula(level: str) -> None:
    """μ > 1 (ρ ≠ 1): value and gradient of mean_i Σ_t m (−min(ρA, clip(ρ)A) + β·ρ·k3) / Σ_t m, written out."""
    logp0, old, ref, adv, mask = random_batch()
    beta = 0.04
    lp = logp0.clone().requires_grad_(True)
    loss, _ = grpo_loss(lp, old, ref, adv, mask, beta=beta, importance_sampling_level=level,
                        use_bias_correction_kl=True)  # fmt: skip
    loss.backward()
    x = logp0.clone().requires_grad_(True)
    log_ratio = x - old
    if level == "sequence":
        log_ratio = ((log_ratio * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True)).expand_as(x)
    rho = torch.exp(log_ratio)
    a = adv[:, None]
    k3 = torch.exp(ref - x) - (ref - x) - 1
    per_token = -torch.minimum(rho * a, rho.clamp(0.8, 1.2) * a) + beta * rho * k3
    reference = ((per_token * mask).sum(1) / mask.sum(1)).mean()
    reference.backward()
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(lp.grad, x.grad)
