"""Per-token scoring of completions: the distribution sampling draws from (temperature, suppressed media ids,
top-k/top-p/min-p filters) and the chunked LM-head pass that gives each token's log-prob and entropy under it
(and under the filtered sampler q). One home for "what the sampler drew from", shared by every backbone's
`generate` and `score_completions` so the two cannot disagree (docs/method.md §4)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint


def gather_logprobs(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Log-probability of each chosen token. logits [B, C, V], token_ids [B, C] → [B, C] (float32)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)


@dataclass
class TokenScores:
    """Per-token log-probabilities (with grad when the pass had it) and entropies (always detached)."""

    logprobs: torch.Tensor  # float32 [B, C]; masked positions hold 0
    entropy: torch.Tensor  # float32 [B, C]; masked positions hold 0
    sampler_logprobs: torch.Tensor | None = None  # float32 [B, C] under the filtered sampler q (detached), when
    # the pass was asked for it with top-k/top-p/min-p on; masked positions hold 0


def filter_logits(scaled: torch.Tensor, top_k: int = 0, top_p: float = 1.0, min_p: float | None = None) -> torch.Tensor:
    """The logits HF's sampling warpers leave: top-k, then top-p, then min-p (transformers 5.23's
    `_get_logits_processor` order, after the temperature; one token always kept), filtered ids at -inf.

    scaled [..., V] (logits / T, suppressed ids already -inf) → [..., V]. Semantics, each step on the previous
    step's output:
    - top-k: drop the ids whose logit is below the k-th largest (ties with it are kept, so more than k may stay);
    - top-p: order the ids by ascending logit (equal logits in the order `torch.sort` gives them, as HF's warper
      sorts) and drop every id whose cumulative probability, that id included, is <= 1 - top_p; the most
      probable id always stays;
    - min-p: drop the ids whose probability is below min_p times the largest probability.
    """
    neg_inf = float("-inf")
    if top_k > 0:
        k = min(top_k, scaled.shape[-1])
        kth = scaled.kthvalue(scaled.shape[-1] - k + 1, dim=-1, keepdim=True).values  # [..., 1] k-th largest
        scaled = scaled.masked_fill(scaled < kth, neg_inf)
    if top_p < 1.0:
        ascending, order = scaled.sort(dim=-1)  # [..., V] each
        below = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p  # [..., V] in ascending order
        below[..., -1] = False  # the most probable id
        drop = torch.empty_like(below).scatter_(-1, order, below)  # [..., V] back in id order
        scaled = scaled.masked_fill(drop, neg_inf)
    if min_p is not None:
        probs = scaled.softmax(dim=-1)  # [..., V]
        floor = min_p * probs.amax(dim=-1, keepdim=True)  # [..., 1]
        scaled = scaled.masked_fill(probs < floor, neg_inf)  # the top id is never below min_p (<= 1) of itself
    return scaled


@dataclass(frozen=True)
class SamplingFilters:
    """The truncation HF's sampler applies after the temperature (`filter_logits`): top-k (0 = off), top-p
    (1 = off), min-p (None = off). A filtered sampler draws from q ≠ π, so GRPO keeps π's log-probs for the loss
    and corrects for q by importance sampling (`ecr.rl.off_policy`, docs/method.md §4)."""

    top_k: int = 0
    top_p: float = 1.0
    min_p: float | None = None

    def __post_init__(self) -> None:
        if self.top_k < 0 or not 0.0 < self.top_p <= 1.0 or (self.min_p is not None and not 0 <= self.min_p <= 1):
            raise ValueError(f"need top_k >= 0, 0 < top_p <= 1 and min_p in [0, 1] or None, got {self}")

    @property
    def active(self) -> bool:
        """Whether any filter changes the distribution (what HF adds a warper for)."""
        return self.top_k > 0 or self.top_p < 1.0 or self.min_p is not None

    def apply(self, scaled: torch.Tensor) -> torch.Tensor:
        """scaled logits [..., V] → the filtered ones (`filter_logits`)."""
        return filter_logits(scaled, self.top_k, self.top_p, self.min_p) if self.active else scaled


@dataclass(frozen=True)
class SamplingDistribution:
    """The next-token distribution rollouts are sampled from; the policy π every GRPO log-prob is taken under.

    π = softmax(logits / `temperature`) over the vocabulary with the `suppressed` ids (media placeholders) at
    probability 0 — HF's `suppress_tokens` followed by its temperature warper. `HFBackbone.generate` takes its
    suppressed ids from here and `score_completions` its log-softmax, so the sampler and the scorer cannot
    drift apart: the importance ratio of a fresh rollout is exactly 1 and the KL compares two distributions on
    the same support (docs/method.md §4). With `filters` on (top-k/top-p/min-p), `log_probs` is the sampler's q:
    the same logits with the filtered ids at -inf, renormalised (what HF samples from); `policy_log_probs` stays π.
    """

    temperature: float = 1.0
    suppressed: tuple[int, ...] = ()  # ids sampling never emits (their log-prob is -inf)
    filters: SamplingFilters = SamplingFilters()

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 for log-probs, got {self.temperature}")

    def scaled_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [..., V] → float32 logits / T with the suppressed ids at -inf, [..., V] (π's logits)."""
        scaled = logits.float() / self.temperature
        if self.suppressed:
            ids = torch.tensor(self.suppressed, device=scaled.device)
            scaled = scaled.index_fill(-1, ids, float("-inf"))
        return scaled

    def policy_log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [..., V] → float32 log-probabilities [..., V] of π (unfiltered; -inf at suppressed ids)."""
        return torch.log_softmax(self.scaled_logits(logits), dim=-1)

    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [..., V] → float32 log-probabilities [..., V] of what the sampler draws from (-inf at suppressed
        and filtered ids; π itself when no filter is on)."""
        return torch.log_softmax(self.filters.apply(self.scaled_logits(logits)), dim=-1)


def entropy_of(logp: torch.Tensor) -> torch.Tensor:
    """Entropy [...] of log-probabilities [..., V]; ids at -inf (suppressed) add 0, not NaN."""
    return -(logp.exp() * logp.clamp(min=torch.finfo(logp.dtype).min)).sum(-1)


LOGIT_BUDGET = 2**25  # float32 logits materialised at once by `chunked_token_scores` (128 MiB)


def chunked_token_scores(
    hidden: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    token_ids: torch.Tensor,
    *,
    distribution: SamplingDistribution = SamplingDistribution(),
    chunk_tokens: int | None = None,
) -> TokenScores:
    """Log-prob and entropy of each chosen token, never holding float32 logits of more than a chunk.

    hidden [B, C, H] (position t predicts token_ids[:, t]), token_ids [B, C] → `TokenScores` [B, C] each.
    Both are taken under `distribution`'s policy π (the sampling temperature and suppressed ids). With its
    `filters` on, the same logits also give `sampler_logprobs`, the log-prob under the filtered sampler q (no
    gradient, no second forward pass). With gradients on, each chunk runs under non-reentrant activation
    checkpointing, so backward keeps only the chunk's hidden states and recomputes its logits: peak memory is one
    chunk of [k, V] floats instead of [B·C, V] (≈ 1.2 GB per prompt at V = 151,936, C = 512, G = 4).
    `chunk_tokens` None = LOGIT_BUDGET / V. The entropy carries its gradient too (GRPO's entropy bonus); a loss
    without it never backpropagates it.
    """
    b, c, h = hidden.shape
    flat_hidden = hidden.reshape(b * c, h)  # [N, H]
    flat_ids = token_ids.reshape(b * c)  # [N]
    sampler = distribution.filters.active

    def score(chunk: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scaled = distribution.scaled_logits(head(chunk))  # [k, V]
        logp = torch.log_softmax(scaled, dim=-1)  # [k, V] under π
        with torch.no_grad():  # q is a constant of the loss: never part of the graph
            q = torch.log_softmax(distribution.filters.apply(scaled.detach()), dim=-1) if sampler else None
            q_ids = q.gather(-1, ids.unsqueeze(-1)).squeeze(-1) if q is not None else scaled.new_zeros(0)  # [k]
        return logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1), entropy_of(logp), q_ids  # [k], [k], [k] or [0]

    if chunk_tokens is None:
        vocab = int(head(flat_hidden[:1]).shape[-1]) if b * c else 1
        chunk_tokens = max(1, LOGIT_BUDGET // vocab)
    checkpointed = torch.is_grad_enabled() and flat_hidden.requires_grad
    parts: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] = ([], [], [])
    for start in range(0, b * c, chunk_tokens):
        args = (flat_hidden[start : start + chunk_tokens], flat_ids[start : start + chunk_tokens])
        outs = checkpoint(score, *args, use_reentrant=False) if checkpointed else score(*args)
        for part, out in zip(parts, outs, strict=True):
            part.append(out)
    empty = flat_hidden.new_zeros(0, dtype=torch.float32)
    joined = lambda part: torch.cat(part).reshape(b, c) if part else empty.reshape(b, c)  # noqa: E731
    logps, entropies, sampled = parts
    return TokenScores(joined(logps), joined(entropies), sampler_logprobs=joined(sampled) if sampler else None)
