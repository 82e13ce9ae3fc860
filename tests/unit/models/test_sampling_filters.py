"""Top-k / top-p / min-p as the sampler applies them (`filter_logits`, `SamplingFilters`): the same ids filtered
and the same logits kept as HF's own warper classes, one by one and chained in `generate`'s order after the
temperature, on random logits with many ties; and the chunked scorer's sampler log-probs (docs/method.md §4)."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from ecr.models.scoring import SamplingDistribution, SamplingFilters, chunked_token_scores, filter_logits


def _random_logits(gen: torch.Generator, trial: int) -> torch.Tensor:
    """[4, V] logits; every other trial rounded to halves (many ties, at the top-k/top-p boundaries too); every
    third with suppressed ids (-inf) as `suppress_tokens` leaves them."""
    vocab = int(torch.randint(2, 80, (1,), generator=gen))
    logits = torch.randn(4, vocab, generator=gen) * 3
    if trial % 2:
        logits = (logits * 2).round() / 2
    if trial % 3 == 0 and vocab > 4:
        logits[:, :3] = float("-inf")
    return logits


def _hf(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, min_p: float | None) -> torch.Tensor:
    """What HF's warpers make of `logits`, chained as `generate` adds them (temperature, top-k, top-p, min-p)."""
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    if min_p is not None:
        warpers.append(MinPLogitsWarper(min_p))
    return warpers(torch.zeros(logits.shape[0], 1, dtype=torch.long), logits.clone())


def _assert_same(got: torch.Tensor, want: torch.Tensor, case) -> None:
    assert torch.equal(torch.isinf(got), torch.isinf(want)), case  # the same ids filtered out
    assert torch.equal(got[torch.isfinite(got)], want[torch.isfinite(want)]), case  # the rest untouched


@pytest.mark.parametrize("which", ["top_k", "top_p", "min_p", "all"])
def test_the_filters_equal_hf_warpers_on_random_logits_with_ties(which: str) -> None:
    gen = torch.Generator().manual_seed(0)
    for trial in range(300):
        logits = _random_logits(gen, trial)
        vocab = logits.shape[-1]
        top_k = int(torch.randint(1, vocab + 3, (1,), generator=gen)) if which in ("top_k", "all") else 0
        top_p = float(torch.rand(1, generator=gen)) * 0.99 + 0.005 if which in ("top_p", "all") else 1.0
        min_p = float(torch.rand(1, generator=gen)) if which in ("min_p", "all") else None
        temperature = (0.7, 1.0, 1.3)[trial % 3]
        got = filter_logits(logits / temperature, top_k, top_p, min_p)
        _assert_same(got, _hf(logits, temperature, top_k, top_p, min_p), (which, trial, top_k, top_p, min_p))


def test_ties_at_the_boundaries_follow_hf() -> None:
    """Top-k keeps every id tied with the k-th logit; top-p's cut inside a block of equal logits keeps the ids
    HF keeps (its ascending `torch.sort` order), and the most probable id always stays."""
    logits = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0, 1.0]])
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[True, True, True, True, False, True]]
    for top_p in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1e-6):
        _assert_same(filter_logits(logits, top_p=top_p), _hf(logits, 1.0, 0, top_p, None), top_p)
    assert torch.isfinite(filter_logits(logits, top_p=1e-6)).sum() == 1


def test_filters_are_checked_and_off_by_default() -> None:
    assert not SamplingFilters().active and SamplingFilters(top_k=5).active and SamplingFilters(min_p=0.0).active
    logits = torch.randn(2, 9)
    assert torch.equal(SamplingFilters().apply(logits), logits)
    for bad in ({"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}, {"min_p": 2.0}):
        with pytest.raises(ValueError, match="top_k >= 0"):
            SamplingFilters(**bad)


def test_the_sampler_distribution_is_the_filtered_policy() -> None:
    """`log_probs` is q (-inf at suppressed and filtered ids, renormalised over the rest); `policy_log_probs` is
    π, the same with no filter."""
    torch.manual_seed(0)
    logits = torch.randn(3, 20)
    dist = SamplingDistribution(0.8, (2, 5), SamplingFilters(top_k=6, top_p=0.9))
    q, pi = dist.log_probs(logits), dist.policy_log_probs(logits)
    want = torch.log_softmax(_hf(logits.index_fill(-1, torch.tensor([2, 5]), float("-inf")), 0.8, 6, 0.9, None), -1)
    _assert_same(q, want, "q")
    assert torch.equal(pi, SamplingDistribution(0.8, (2, 5)).log_probs(logits))
    kept = torch.isfinite(q)
    assert int(kept.sum(-1).max()) <= 6 and torch.allclose(q.exp().sum(-1), torch.ones(3))
    # on the kept ids q = π − log(π's mass there): every kept id is more likely under q
    mass = (pi.exp() * kept).sum(-1, keepdim=True)  # [3, 1]
    assert torch.allclose(q[kept], (pi - mass.log()).expand_as(pi)[kept], atol=1e-6)


@pytest.mark.parametrize("chunk_tokens", [1, 4, 100])
def test_the_chunked_pass_returns_the_sampler_logprobs_without_a_gradient(chunk_tokens: int) -> None:
    """The same chunked pass gives π's log-probs (with their gradient, as before) and q's (detached) from the
    same logits; without filters it gives no q."""
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 30)
    hidden = torch.randn(2, 5, 8, requires_grad=True)
    dist = SamplingDistribution(1.3, (0,), SamplingFilters(top_k=10, top_p=0.8, min_p=0.05))
    q = dist.log_probs(head(hidden))  # [2, 5, V]
    ids = q.argmax(-1)  # ids the sampler can draw
    got = chunked_token_scores(hidden, head, ids, distribution=dist, chunk_tokens=chunk_tokens)
    plain = chunked_token_scores(hidden, head, ids, distribution=SamplingDistribution(1.3, (0,)))
    assert got.sampler_logprobs is not None and not got.sampler_logprobs.requires_grad
    assert torch.allclose(got.sampler_logprobs, q.gather(-1, ids[..., None])[..., 0], atol=1e-6)
    assert torch.allclose(got.logprobs, plain.logprobs) and plain.sampler_logprobs is None
    assert bool((got.sampler_logprobs >= got.logprobs).all())  # q renormalises π over fewer ids
    (grad,) = torch.autograd.grad(got.logprobs.sum(), hidden)  # checkpointed chunks recompute; q is no part
    (want,) = torch.autograd.grad(plain.logprobs.sum(), hidden)
    assert torch.allclose(grad, want, atol=1e-6)
