"""The policy backbone interface: what every model family (Qwen2.5-Omni, text LMs, later HumanOmni/R1-Omni or
Qwen3-Omni) provides to the training stages.

A stage never touches a family's internals; it asks the backbone to
- `load()` the weights (heavy: called from `configure_model`),
- `collator(mode)` to turn `ClipSample`s into model inputs ("train": prompt + target with assistant-only
  labels, right padding; "generate": prompt only, left padding),
- `loss(batch)` for supervised training,
- `encode_prompt(batch)` ONCE per prompt: media features merged into the prompt embeddings + positions, the
  cacheable `EncodedPrompt` that GRPO reuses for G rollouts and for policy and reference log-probs,
- `generate(encoded, group_size=G, …)` (one prefill per prompt for its G samples) and
  `token_logprobs(encoded, completion_ids, completion_mask)` on that encoding.
Adding a family = a new module implementing this Protocol + `register_backbone`, nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch.utils.checkpoint import checkpoint

from ecr.models.config import PolicyConfig

CollateMode = Literal["train", "generate"]


@dataclass
class EncodedPrompt:
    """A left-padded prompt batch with media already encoded: reusable for rollouts and log-probs.

    `generate_kwargs` holds what `generate` needs besides the embeddings (e.g. Omni grid sizes for its
    3-D rotary positions) and `use_audio_in_video` the A/V layout the prompt was encoded with (Omni: audio
    interleaved in the video span); media tensors themselves are NOT kept, so the encoders never run again.
    """

    input_ids: torch.Tensor  # [B, P] prompt token ids (placeholders included)
    inputs_embeds: torch.Tensor  # [B, P, H] token embeddings with media features scattered in
    attention_mask: torch.Tensor  # [B, P] 1 = real token, 0 = left padding
    position_ids: torch.Tensor  # [D, B, P] rotary positions (D = 3 for Omni m-RoPE, 1 for plain LMs)
    next_position: torch.Tensor  # [B] position id of the first completion token
    generate_kwargs: dict[str, torch.Tensor] = field(default_factory=dict)  # per-sample tensors, batch dim 0
    use_audio_in_video: bool = False  # the batch's A/V layout (one flag per batch, as the collator sets it)

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    def map_rows(self, fn: Callable[[torch.Tensor, int], torch.Tensor]) -> EncodedPrompt:
        """The encoding with `fn(tensor, batch_dim)` applied to every per-sample tensor (rows are samples)."""
        return replace(
            self,
            input_ids=fn(self.input_ids, 0),
            inputs_embeds=fn(self.inputs_embeds, 0),
            attention_mask=fn(self.attention_mask, 0),
            position_ids=fn(self.position_ids, 1),
            next_position=fn(self.next_position, 0),
            generate_kwargs={k: fn(v, 0) for k, v in self.generate_kwargs.items()},
        )

    def repeat_interleave(self, repeats: int) -> EncodedPrompt:
        """Each prompt `repeats` times in a row (B → B·G), e.g. for G rollouts per prompt. No re-encoding."""
        return self.map_rows(lambda t, dim: t.repeat_interleave(repeats, dim=dim))

    def select(self, rows: torch.Tensor) -> EncodedPrompt:
        """The rows `rows` (long [B']) of the batch, e.g. the groups a filter keeps."""
        return self.map_rows(lambda t, dim: t.index_select(dim, rows.to(t.device)))

    def detach(self) -> EncodedPrompt:
        """The same encoding cut from the graph (frozen towers: nothing to back-propagate into)."""
        return replace(self, inputs_embeds=self.inputs_embeds.detach())

    @staticmethod
    def concat(parts: Sequence[EncodedPrompt], pad_id: int = 0) -> EncodedPrompt:
        """The rows of several encodings as one batch (dynamic sampling joins the groups of several draws).

        Prompts are left-padded to the longest (ids `pad_id`, embeddings 0, attention 0, positions 1: padding is
        masked, its values never reach a real token); `generate_kwargs` tensors are joined on dim 0, their
        trailing dims right-padded with 0 (per-sample audio feature masks differ in length between batches).
        """
        if not parts:
            raise ValueError("EncodedPrompt.concat needs at least one encoding")
        first = parts[0]
        if len(parts) == 1:
            return first
        if any(p.use_audio_in_video != first.use_audio_in_video for p in parts):
            raise ValueError("cannot join prompts encoded with and without use_audio_in_video")
        if any(p.generate_kwargs.keys() != first.generate_kwargs.keys() for p in parts):
            raise ValueError("cannot join prompts whose generate_kwargs differ in keys")
        width = max(p.input_ids.shape[1] for p in parts)

        def left(t: torch.Tensor, value: float, dim: int) -> torch.Tensor:
            pad = width - t.shape[dim]
            if not pad:
                return t
            shape = list(t.shape)
            shape[dim] = pad
            return torch.cat([t.new_full(shape, value), t], dim=dim)

        return EncodedPrompt(
            input_ids=torch.cat([left(p.input_ids, pad_id, 1) for p in parts]),  # [ΣB, P]
            inputs_embeds=torch.cat([left(p.inputs_embeds, 0.0, 1) for p in parts]),  # [ΣB, P, H]
            attention_mask=torch.cat([left(p.attention_mask, 0, 1) for p in parts]),  # [ΣB, P]
            position_ids=torch.cat([left(p.position_ids, 1, 2) for p in parts], dim=1),  # [D, ΣB, P]
            next_position=torch.cat([p.next_position for p in parts]),  # [ΣB]
            generate_kwargs={k: _cat_rows([p.generate_kwargs[k] for p in parts]) for k in first.generate_kwargs},
            use_audio_in_video=first.use_audio_in_video,
        )


def _cat_rows(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Tensors [B_i, *T_i] → [ΣB_i, *max T]: joined on dim 0, each trailing dim right-padded with 0."""
    shape = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
    padded = []
    for t in tensors:
        pads: list[int] = []
        for d in reversed(range(1, t.dim())):
            pads += [0, shape[d - 1] - t.shape[d]]
        padded.append(torch.nn.functional.pad(t, pads) if any(pads) else t)
    return torch.cat(padded)


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Temporarily `eval()` (sampling must never run in train mode: see `HFBackbone.generate`)."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def completion_positions(next_position: torch.Tensor, length: int, dims: int) -> torch.Tensor:
    """Positions of appended text tokens: they continue after the prompt's largest position on every axis.

    next_position [B] → [dims, B, length]
    """
    steps = torch.arange(length, device=next_position.device)
    pos = next_position[:, None] + steps[None, :]  # [B, C]
    return pos[None].expand(dims, -1, -1)


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


@runtime_checkable
class PolicyBackbone(Protocol):
    """What a model family provides to the stages (see module docstring)."""

    name: str
    config: PolicyConfig  # what was asked for (weights, LoRA, quantisation, inputs)
    model: torch.nn.Module | None  # set by load(); a PeftModel when LoRA is on

    def load(self, device: torch.device | str | None = None) -> torch.nn.Module:
        """Load weights (+ quantisation, LoRA, freezing). Idempotent."""
        ...

    def collator(self, mode: CollateMode) -> Callable[[list[Any]], dict[str, Any]]:
        """A picklable collate function for DataLoader workers."""
        ...

    def loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, int]:
        """Mean token cross-entropy on the assistant tokens and the number of those tokens."""
        ...

    def encode_prompt(self, batch: Mapping[str, Any]) -> EncodedPrompt:
        """Run the media encoders once and merge them into the prompt embeddings."""
        ...

    def generate(
        self, prompt: EncodedPrompt, *, group_size: int = 1, share_prefix: bool = True, **generation_kwargs: Any
    ) -> torch.Tensor:
        """Completion token ids [B·G, C] (prompt stripped; padded with the pad id after EOS), sampled in eval mode;
        `group_size=G` samples G per prompt (a prompt's rows contiguous), with `share_prefix` from ONE prefill of
        each prompt, exactly what `generate(prompt.repeat_interleave(G))` samples."""
        ...

    def eos_token_ids(self) -> list[int]:
        """Every id that ends a completion (tokenizer and generation config)."""
        ...

    def eos_texts(self) -> tuple[str, ...]:
        """Those end-of-sequence tokens as text."""
        ...

    def completion_mask(self, completion_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask [N, C], truncated [N]) of generated ids: up to and including the first EOS."""
        ...

    def token_logprobs(
        self, prompt: EncodedPrompt, completion_ids: torch.Tensor, completion_mask: torch.Tensor
    ) -> torch.Tensor:
        """Log-prob [B, C] of each completion token given the encoded prompt (grad flows to trainable params)."""
        ...

    def score_completions(
        self,
        prompt: EncodedPrompt,
        completion_ids: torch.Tensor,
        completion_mask: torch.Tensor,
        *,
        temperature: float = 1.0,
        chunk_tokens: int | None = None,
        group_size: int = 1,
        share_prefix: bool = True,
        filters: SamplingFilters = SamplingFilters(),
    ) -> TokenScores:
        """Log-probs and entropies [B·G, C] under `sampling_distribution(temperature)`, in one chunked pass (GRPO's
        policy/old/ref passes) of prompt [B] with G completions each; `share_prefix`: each prompt runs once for
        its G completions where `can_share_prefix()` allows it. With `filters` on, also the sampler's log-probs
        (`TokenScores.sampler_logprobs`) from the same logits."""
        ...

    def can_share_prefix(self) -> bool:
        """Whether a prompt's KV cache can serve its completions now (not while gradient checkpointing trains)."""
        ...

    def prompt_encoding_is_trainable(self) -> bool:
        """True when a trained part (a media tower, the token embeddings) changes `encode_prompt`'s output, so a
        cached encoding carries no gradient for it and update passes must encode again."""
        ...

    def media_token_ids(self) -> list[int]:
        """Placeholder token ids a completion must never contain (suppressed while sampling)."""
        ...

    def sampling_distribution(
        self, temperature: float = 1.0, filters: SamplingFilters = SamplingFilters()
    ) -> SamplingDistribution:
        """What `generate` samples from at `temperature` with `filters` (media ids suppressed); its policy π is the
        distribution `score_completions` takes its log-probs and entropies under."""
        ...

    def adapter_disabled(self) -> AbstractContextManager[None]:
        """Context in which the model runs without its LoRA adapter (reference log-probs, no second copy)."""
        ...

    def decode(self, token_ids: torch.Tensor) -> list[str]:
        """Completion texts (special tokens dropped, format tags kept)."""
        ...

    def trainable_parameter_names(self) -> list[str]:
        """Names of the parameters training changes (LoRA adapters, unfrozen modules): what checkpoints hold."""
        ...

    def save_pretrained(self, out_dir: str | Path, *, merged: bool = False) -> Path:
        """Adapters in PEFT format (or, merged=True, a full HF model folder + processor); returns the folder."""
        ...
