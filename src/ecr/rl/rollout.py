"""One GRPO rollout: encode a prompt batch ONCE, sample G completions per prompt, score them, compute advantages.

The media encoders run a single time per prompt (`encode_prompt`); the encoding is reused for sampling, the
old-policy log-probs and the reference log-probs, and (when towers and token embeddings are frozen, the LoRA
default) for the policy log-probs of every update on this rollout. The prompt prefix is shared too: sampling
prefills each prompt once and decodes its G completions from that KV cache (`generate(group_size=G)`), and the
log-prob passes run each prompt once per group (`shared_prefix=G`); `share_prefix=False` repeats the prompt G
times instead (`EncodedPrompt.repeat_interleave`), the same samples and values at more compute. Three traps
are handled here:
- sampling runs in `eval()` mode: in train mode with gradient checkpointing, HF turns the KV cache off inside
  the layers while generation still feeds one token at a time, which silently gives wrong samples;
- media placeholder ids are suppressed while sampling, and log-probs are taken under the distribution the
  tokens were drawn from: logits / T with the same ids suppressed (`PolicyBackbone.sampling_distribution`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ecr.models import EncodedPrompt, PolicyBackbone
from ecr.rl.advantages import group_advantages, zero_std_groups
from ecr.rl.masks import completion_mask, mask_truncated
from ecr.rl.rewards import CombinedReward, RewardOutput

ReferenceFn = Callable[[EncodedPrompt, Mapping[str, Any], torch.Tensor, torch.Tensor], torch.Tensor]


def prefix_groups(backbone: PolicyBackbone, group_size: int, enabled: bool = True) -> int:
    """`shared_prefix` for scoring G completions per prompt: G, unless disabled or gradient checkpointing trains
    (it recomputes layers without a KV cache), where each row runs its own prompt."""
    model = backbone.model
    checkpointing = bool(getattr(getattr(model, "base_model", model), "is_gradient_checkpointing", False))
    return group_size if enabled and not (checkpointing and model is not None and model.training) else 1


@dataclass(frozen=True)
class SamplingSettings:
    """How rollouts are sampled (HF generation arguments)."""

    max_new_tokens: int = 512
    """Longest completion; a completion that reaches it without EOS counts as truncated."""
    temperature: float = 1.0
    """Sampling temperature (also the temperature of the GRPO log-probs)."""
    top_p: float = 1.0
    """Nucleus sampling mass (1 = off)."""
    top_k: int = 0
    """Top-k sampling (0 = off; HF's own default of 50 is overridden)."""
    min_p: float | None = None
    """Min-p sampling (None = off)."""
    repetition_penalty: float = 1.0
    """HF repetition penalty (1 = off)."""
    min_new_tokens: int = 0
    """Shortest completion (benchmarks force fixed lengths with it)."""

    def generate_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "do_sample": True,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.min_p is not None:
            kw["min_p"] = self.min_p
        if self.min_new_tokens:
            kw["min_new_tokens"] = self.min_new_tokens
        return kw


@dataclass
class Rollout:
    """G completions for each of B prompts (N = B·G rows, a prompt's rows contiguous) and what the loss needs."""

    prompt: EncodedPrompt  # repeated: batch N
    batch: Mapping[str, Any]  # the collated prompt batch (B rows), kept to re-encode when towers train
    completion_ids: torch.Tensor  # long [N, C]
    mask: torch.Tensor  # float [N, C]: tokens up to and including the first EOS (truncated rows 0 if masked)
    truncated: torch.Tensor  # bool [N]: no EOS within max_new_tokens
    texts: list[str]  # N decoded completions
    labels: list[str]  # N ground-truth labels
    clip_ids: list[str]  # N clip ids
    rewards: RewardOutput  # total + per-term values, N each
    advantages: torch.Tensor  # float [N]
    zero_std: torch.Tensor  # bool [B]: groups whose rewards have no spread
    group_size: int
    old_logp: torch.Tensor | None = None  # float [N, C] at sampling time (needed when μ > 1)
    ref_logp: torch.Tensor | None = None  # float [N, C] under the reference policy (β > 0)
    entropy: torch.Tensor | None = None  # float [N, C] of the sampling-time pass, when one ran
    timings: dict[str, float] = field(default_factory=dict)  # seconds: encode, generate, score, reference
    batch_rows: torch.Tensor | None = None  # long [B']: the rows of `batch` whose groups are kept (None = all)

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum())

    def encode_prompt(self, backbone: PolicyBackbone) -> EncodedPrompt:
        """The prompts encoded again, with gradients (a trainable tower or embedding makes `prompt` stale): N
        rows like `prompt`. `batch` still holds all B collated prompts, so only the kept groups' rows are used
        (the dropped prompts' features get no gradient)."""
        encoded = backbone.encode_prompt(self.batch)  # [B]
        if self.batch_rows is not None:
            encoded = encoded.select(self.batch_rows)  # [B']
        return encoded.repeat_interleave(self.group_size)  # [N = B'·G]

    def keep_groups(self, keep: torch.Tensor) -> Rollout:
        """The rollout restricted to the groups where `keep` (bool [B]) is true (`filter_zero_std_groups`)."""
        rows = keep.repeat_interleave(self.group_size).nonzero().flatten()  # [N']
        pick = lambda t: None if t is None else t.index_select(0, rows.to(t.device))  # noqa: E731
        idx = rows.tolist()
        batch_rows = self.batch_rows if self.batch_rows is not None else torch.arange(keep.numel())
        return replace(
            self,
            batch_rows=batch_rows[keep.to(batch_rows.device)],
            prompt=self.prompt.select(rows),
            completion_ids=pick(self.completion_ids),
            mask=pick(self.mask),
            truncated=pick(self.truncated),
            texts=[self.texts[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            clip_ids=[self.clip_ids[i] for i in idx],
            rewards=RewardOutput(
                total=[self.rewards.total[i] for i in idx],
                terms={k: [v[i] for i in idx] for k, v in self.rewards.terms.items()},
                stats={k: [v[i] for i in idx] for k, v in self.rewards.stats.items()},
            ),
            advantages=pick(self.advantages),
            zero_std=self.zero_std[keep],
            old_logp=pick(self.old_logp),
            ref_logp=pick(self.ref_logp),
            entropy=pick(self.entropy),
        )


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Temporarily `eval()` (sampling must never run in train mode: see module docstring)."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def eos_ids(backbone: PolicyBackbone) -> list[int]:
    """Every id that ends a completion: the tokenizer's EOS and the model's generation-config EOS ids."""
    ids: set[int] = set()
    tok_eos = getattr(getattr(backbone, "tokenizer", None), "eos_token_id", None)
    if isinstance(tok_eos, int):
        ids.add(tok_eos)
    model = backbone.model
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= {gen} if isinstance(gen, int) else set(gen or [])
    return sorted(ids)


def collect_rollout(
    backbone: PolicyBackbone,
    batch: Mapping[str, Any],
    reward: CombinedReward,
    *,
    group_size: int,
    sampling: SamplingSettings,
    advantage_scale: str = "group",
    mask_truncated_completions: bool = False,
    need_old_logp: bool = False,
    reference: ReferenceFn | None = None,
    chunk_tokens: int | None = None,
    share_prefix: bool = True,
) -> Rollout:
    """Sample and score one rollout for a collated prompt batch (`collator("generate")` output, B prompts)."""
    model = backbone.model
    assert model is not None, "backbone.load() first"
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with torch.no_grad():
        prompt = backbone.encode_prompt(batch).detach()  # the ONE encoder run of this step
        timings["encode"] = time.perf_counter() - t0
        repeated = prompt.repeat_interleave(group_size)  # [N = B·G]
        t0 = time.perf_counter()
        with eval_mode(model):
            if share_prefix:  # one prefill per prompt, G completions decoded from its KV cache
                ids = backbone.generate(prompt, group_size=group_size, **sampling.generate_kwargs())  # [N, C]
            else:
                ids = backbone.generate(repeated, **sampling.generate_kwargs())  # [N, C]
        timings["generate"] = time.perf_counter() - t0
    mask, truncated = completion_mask(ids, eos_ids(backbone))
    mask = mask.float()
    if mask_truncated_completions:
        mask = mask_truncated(mask, truncated).float()
    texts = backbone.decode(ids)
    meta = batch["meta"]
    labels = [lbl for lbl in meta["label"] for _ in range(group_size)]
    clip_ids = [cid for cid in meta["ids"] for _ in range(group_size)]
    t0 = time.perf_counter()
    rewards = reward(texts, labels)
    totals = torch.tensor(rewards.total, dtype=torch.float32)  # [N]
    advantages = group_advantages(totals, group_size, scale=advantage_scale).to(mask.device)  # type: ignore[arg-type]
    timings["score"] = time.perf_counter() - t0
    rollout = Rollout(
        prompt=repeated,
        batch=batch,
        completion_ids=ids,
        mask=mask,
        truncated=truncated,
        texts=texts,
        labels=labels,
        clip_ids=clip_ids,
        rewards=rewards,
        advantages=advantages,
        zero_std=zero_std_groups(totals, group_size),
        group_size=group_size,
        timings=timings,
    )
    with torch.no_grad():
        if need_old_logp:
            t0 = time.perf_counter()
            scores = backbone.score_completions(
                repeated,
                ids,
                mask,
                temperature=sampling.temperature,
                chunk_tokens=chunk_tokens,
                shared_prefix=prefix_groups(backbone, group_size, share_prefix),
            )
            rollout.old_logp, rollout.entropy = scores.logprobs, scores.entropy
            timings["old_logp"] = time.perf_counter() - t0
        if reference is not None:
            t0 = time.perf_counter()
            rollout.ref_logp = reference(repeated, batch, ids, mask)
            timings["reference"] = time.perf_counter() - t0
    return rollout


def adapter_reference(
    backbone: PolicyBackbone,
    *,
    group_size: int,
    temperature: float,
    chunk_tokens: int | None,
    share_prefix: bool = True,
) -> ReferenceFn:
    """Reference log-probs from the policy itself with its LoRA adapter switched off (no second copy).

    The policy's prompt encoding is reused: LoRA sits in the language model only, so with frozen towers and
    embeddings the reference would encode the prompt identically.
    """

    def reference(prompt: EncodedPrompt, batch: Mapping[str, Any], ids: torch.Tensor, mask: torch.Tensor):
        with backbone.adapter_disabled():
            groups = prefix_groups(backbone, group_size, share_prefix)
            return backbone.score_completions(
                prompt, ids, mask, temperature=temperature, chunk_tokens=chunk_tokens, shared_prefix=groups
            )

    return lambda *args: reference(*args).logprobs


def copy_reference(
    reference_backbone: PolicyBackbone,
    *,
    group_size: int,
    temperature: float,
    chunk_tokens: int | None,
    share_prefix: bool = True,
) -> ReferenceFn:
    """Reference log-probs from a frozen copy (full fine-tune): it encodes the prompt with its own weights,
    because the policy's trained token embeddings no longer match the reference's."""

    def reference(prompt: EncodedPrompt, batch: Mapping[str, Any], ids: torch.Tensor, mask: torch.Tensor):
        own = reference_backbone.encode_prompt(batch).repeat_interleave(group_size)
        groups = group_size if share_prefix else 1  # the frozen copy is in eval mode: no checkpointing
        return reference_backbone.score_completions(
            own, ids, mask, temperature=temperature, chunk_tokens=chunk_tokens, shared_prefix=groups
        ).logprobs

    return reference
