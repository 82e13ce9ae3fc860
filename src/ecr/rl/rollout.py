"""One GRPO rollout: encode a prompt batch ONCE, sample G completions per prompt, score them, compute advantages.

The media encoders run a single time per prompt (`encode_prompt`); the encoding [B rows] is reused for
sampling, the old-policy log-probs and the reference log-probs, and (when towers and token embeddings are
frozen, the LoRA default) for the policy log-probs of every update on this rollout. A rollout holds the B
prompt rows and `group_size`; the N = B·G completion rows follow them, a prompt's G rows contiguous. How the
prompt prefix is shared and what the reference is: `ecr.rl.scorer.GroupScorer`. Media placeholder ids are
suppressed while sampling, and log-probs are taken under the distribution the tokens were drawn from
(`PolicyBackbone.sampling_distribution`); sampling runs in eval mode (`PolicyBackbone.generate`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ecr.models import EncodedPrompt, PolicyBackbone
from ecr.rl.advantages import AdvantageScale, group_advantages, zero_std_groups
from ecr.rl.masks import mask_truncated
from ecr.rl.rewards import CombinedReward, RewardOutput
from ecr.rl.scorer import GroupScorer

__all__ = [
    "GroupRewards",
    "PromptSource",
    "Rollout",
    "collect_rollout",
    "rollout_metrics",
    "sample_rollout",
    "score_rollout",
]


@dataclass
class GroupRewards:
    """A rollout's rewards as tensors, N values each: the weighted total, each unweighted term, extra stats."""

    total: torch.Tensor  # float32 [N]
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # float32 [N] each
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # float32 [N] each

    @classmethod
    def of(cls, out: RewardOutput) -> GroupRewards:
        """The reward functions' lists, made tensors once."""
        as_tensor = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
        return cls(
            as_tensor(out.total),
            {k: as_tensor(v) for k, v in out.terms.items()},
            {k: as_tensor(v) for k, v in out.stats.items()},
        )

    def select(self, rows: torch.Tensor) -> GroupRewards:
        """The rows `rows` (long [N'])."""
        pick = lambda t: t.index_select(0, rows.to(t.device))  # noqa: E731
        return GroupRewards(
            pick(self.total), {k: pick(v) for k, v in self.terms.items()}, {k: pick(v) for k, v in self.stats.items()}
        )

    @staticmethod
    def cat(parts: Sequence[GroupRewards]) -> GroupRewards:
        """The rows of several rollouts' rewards, in order (same terms in each)."""
        first = parts[0]
        return GroupRewards(
            torch.cat([p.total for p in parts]),
            {k: torch.cat([p.terms[k] for p in parts]) for k in first.terms},
            {k: torch.cat([p.stats[k] for p in parts]) for k in first.stats},
        )


@dataclass(frozen=True)
class PromptSource:
    """A collated prompt batch with its media, kept when the encoding is trainable (update passes re-encode it),
    and which of its rows the rollout still holds (None = all)."""

    batch: Mapping[str, Any]
    rows: torch.Tensor | None = None  # long [B']

    @property
    def num_rows(self) -> int:
        return int(self.batch["input_ids"].shape[0]) if self.rows is None else int(self.rows.numel())

    def encode(self, backbone: PolicyBackbone) -> EncodedPrompt:
        """The kept rows encoded again, with gradients."""
        encoded = backbone.encode_prompt(self.batch)  # [B]
        return encoded.select(self.rows) if self.rows is not None else encoded  # [B']

    def keep(self, keep: torch.Tensor) -> PromptSource:
        """The source restricted to its held rows where `keep` (bool [B']) is true."""
        rows = self.rows if self.rows is not None else torch.arange(keep.numel())
        return replace(self, rows=rows[keep.to(rows.device)])


@dataclass
class Rollout:
    """G completions for each of B prompts (N = B·G rows, a prompt's rows contiguous) and what the loss needs."""

    prompt: EncodedPrompt  # B rows, detached
    group_size: int
    completion_ids: torch.Tensor  # long [N, C]
    mask: torch.Tensor  # float [N, C]: tokens up to and including the first EOS (truncated rows 0 if masked)
    truncated: torch.Tensor  # bool [N]: no EOS within max_new_tokens
    texts: list[str]  # N decoded completions
    labels: list[str]  # N ground-truth labels
    clip_ids: list[str]  # N clip ids
    rewards: GroupRewards  # N values each
    advantages: torch.Tensor  # float [N]
    zero_std: torch.Tensor  # bool [B]: groups whose rewards have no spread
    sources: tuple[PromptSource, ...] = ()  # the collated prompts with their media, kept only when the encoding
    # is trainable (update passes re-encode them), one per draw joined into this rollout; else (), so the buffer
    # holds no media tensors
    old_logp: torch.Tensor | None = None  # float [N, C] at sampling time (needed when μ > 1)
    ref_logp: torch.Tensor | None = None  # float [N, C] under the reference policy (β > 0)
    entropy: torch.Tensor | None = None  # float [N, C] of the sampling-time pass, when one ran
    sampler_logp: torch.Tensor | None = None  # float [N, C] under the filtered sampler q (top-k/top-p/min-p on)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: encode, generate, score, reference

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum())

    @property
    def num_groups(self) -> int:
        return int(self.zero_std.numel())

    def update_prompt(self, backbone: PolicyBackbone) -> EncodedPrompt:
        """The prompt [B] of an update pass: the rollout's encoding, or, when `sources` were kept (a trainable
        tower or embedding makes the encoding stale), the held prompts encoded again with gradients."""
        if not self.sources:
            return self.prompt
        return EncodedPrompt.concat([src.encode(backbone) for src in self.sources])

    def _keep_sources(self, keep: torch.Tensor) -> tuple[PromptSource, ...]:
        """`sources` restricted to the groups where `keep` (bool [B]) is true; sources left empty are dropped."""
        kept, start = [], 0
        for src in self.sources:
            part = keep[start : start + src.num_rows]
            start += src.num_rows
            if part.any():
                kept.append(src.keep(part))
        return tuple(kept)

    def keep_groups(self, keep: torch.Tensor) -> Rollout:
        """The rollout restricted to the groups where `keep` (bool [B]) is true (`filter_zero_std_groups`)."""
        groups = keep.nonzero().flatten()  # [B']
        rows = keep.repeat_interleave(self.group_size).nonzero().flatten()  # [N']

        def pick(t: torch.Tensor) -> torch.Tensor:
            return t.index_select(0, rows.to(t.device))

        def pick_optional(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else pick(t)

        idx = rows.tolist()
        return replace(
            self,
            sources=self._keep_sources(keep),
            prompt=self.prompt.select(groups),
            completion_ids=pick(self.completion_ids),
            mask=pick(self.mask),
            truncated=pick(self.truncated),
            texts=[self.texts[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            clip_ids=[self.clip_ids[i] for i in idx],
            rewards=self.rewards.select(rows),
            advantages=pick(self.advantages),
            zero_std=self.zero_std[keep],
            old_logp=pick_optional(self.old_logp),
            ref_logp=pick_optional(self.ref_logp),
            entropy=pick_optional(self.entropy),
            sampler_logp=pick_optional(self.sampler_logp),
        )

    def first_groups(self, count: int) -> Rollout:
        """The first `count` groups (dynamic sampling trims a draw that overshoots its target)."""
        keep = torch.arange(self.num_groups) < count  # [B]
        return self if bool(keep.all()) else self.keep_groups(keep)

    def with_advantages(self, scale: AdvantageScale) -> Rollout:
        """Advantages recomputed over this rollout's rows (after joining draws, `batch` scaling sees them all)."""
        advantages = group_advantages(self.rewards.total, self.group_size, scale=scale)
        return replace(self, advantages=advantages.to(self.advantages.device))

    def inert(self) -> Rollout:
        """The same rows with no active token and zero advantages: a DDP rank with nothing to train still runs
        the update passes (every rank must reach the same gradient all-reduce) but adds nothing to them."""
        return replace(self, mask=torch.zeros_like(self.mask), advantages=torch.zeros_like(self.advantages))

    @staticmethod
    def concat(parts: Sequence[Rollout]) -> Rollout:
        """Several rollouts (draws of one step, same group size) as one: prompts left-padded, completions
        right-padded to the longest (padding is masked: id 0, mask 0, log-probs 0)."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        if any(p.group_size != first.group_size for p in parts):
            raise ValueError("cannot join rollouts of different group sizes")
        width = max(p.completion_ids.shape[1] for p in parts)
        right = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]))  # noqa: E731  # [N_i, C_i] → [N_i, C]

        def joined(name: str) -> torch.Tensor | None:
            values = [getattr(p, name) for p in parts]
            if all(v is None for v in values):
                return None
            if any(v is None for v in values):
                raise ValueError(f"cannot join rollouts where only some hold {name}")
            return torch.cat([right(v) for v in values])

        flat = lambda name: [x for p in parts for x in getattr(p, name)]  # noqa: E731
        return Rollout(
            prompt=EncodedPrompt.concat([p.prompt for p in parts]),
            group_size=first.group_size,
            completion_ids=torch.cat([right(p.completion_ids) for p in parts]),
            mask=torch.cat([right(p.mask) for p in parts]),
            truncated=torch.cat([p.truncated for p in parts]),
            texts=flat("texts"),
            labels=flat("labels"),
            clip_ids=flat("clip_ids"),
            rewards=GroupRewards.cat([p.rewards for p in parts]),
            advantages=torch.cat([p.advantages for p in parts]),
            zero_std=torch.cat([p.zero_std for p in parts]),
            sources=tuple(src for p in parts for src in p.sources),
            old_logp=joined("old_logp"),
            ref_logp=joined("ref_logp"),
            entropy=joined("entropy"),
            sampler_logp=joined("sampler_logp"),
            timings=_summed_timings(parts),
        )


def _summed_timings(parts: Sequence[Rollout]) -> dict[str, float]:
    """Seconds per phase summed over rollouts."""
    out: dict[str, float] = {}
    for p in parts:
        for name, sec in p.timings.items():
            out[name] = out.get(name, 0.0) + sec
    return out


def sample_rollout(
    scorer: GroupScorer,
    batch: Mapping[str, Any],
    reward: CombinedReward,
    *,
    advantage_scale: AdvantageScale = "group",
    mask_truncated_completions: bool = False,
) -> Rollout:
    """Encode a collated prompt batch (`collator("generate")` output, B prompts) once, sample G completions per
    prompt, reward them: no log-prob pass yet (`score_rollout`), so groups a filter drops never get one. The
    batch is held as the rollout's one `PromptSource` until `score_rollout` (a copy reference encodes from it)."""
    backbone, group = scorer.policy, scorer.group_size
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with torch.no_grad():
        prompt = backbone.encode_prompt(batch).detach()  # [B]: the ONE encoder run of this step
    timings["encode"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids = scorer.generate(prompt)  # [N, C]
    timings["generate"] = time.perf_counter() - t0
    mask, truncated = backbone.completion_mask(ids)
    mask = mask.float()
    if mask_truncated_completions:
        mask = mask_truncated(mask, truncated).float()
    texts = backbone.decode(ids)
    meta = batch["meta"]
    labels = [lbl for lbl in meta["label"] for _ in range(group)]
    t0 = time.perf_counter()
    rewards = GroupRewards.of(reward(texts, labels))
    advantages = group_advantages(rewards.total, group, scale=advantage_scale).to(mask.device)
    timings["score"] = time.perf_counter() - t0
    return Rollout(
        prompt=prompt,
        group_size=group,
        sources=(PromptSource(batch),),
        completion_ids=ids,
        mask=mask,
        truncated=truncated,
        texts=texts,
        labels=labels,
        clip_ids=[cid for cid in meta["ids"] for _ in range(group)],
        rewards=rewards,
        advantages=advantages,
        zero_std=zero_std_groups(rewards.total, group),
        timings=timings,
    )


def score_rollout(scorer: GroupScorer, rollout: Rollout, *, need_old_logp: bool = False) -> Rollout:
    """The sampling-time log-probs of a sampled rollout's rows (after any group filter): old log-probs (μ > 1, or
    a filtered sampler, whose q comes from the same logits) and the reference's (β > 0). The policy has not
    changed since sampling, so this equals scoring at sampling time. The collated batches are dropped unless
    the encoding trains (update passes re-encode them): the buffer then holds no media tensors."""
    backbone, prompt = scorer.policy, rollout.prompt
    ids, mask = rollout.completion_ids, rollout.mask
    timings = dict(rollout.timings)
    old_logp = entropy = sampler_logp = ref_logp = None
    if need_old_logp or scorer.filtered:
        t0 = time.perf_counter()
        scores = scorer.old_scores(prompt, ids, mask)
        old_logp, entropy, sampler_logp = scores.logprobs, scores.entropy, scores.sampler_logprobs
        timings["old_logp"] = time.perf_counter() - t0
    if scorer.reference != "none":
        t0 = time.perf_counter()
        own = None
        if scorer.reference == "copy":  # the copy's own prompt encoding, of the rows held
            assert scorer.reference_copy is not None
            with torch.no_grad():
                own = EncodedPrompt.concat([src.encode(scorer.reference_copy) for src in rollout.sources])
        ref_logp = scorer.reference_logprobs(prompt, ids, mask, own_prompt=own)
        timings["reference"] = time.perf_counter() - t0
    sources = rollout.sources if backbone.prompt_encoding_is_trainable() else ()
    return replace(
        rollout, old_logp=old_logp, entropy=entropy, sampler_logp=sampler_logp, ref_logp=ref_logp,
        sources=sources, timings=timings,
    )  # fmt: skip


def collect_rollout(
    scorer: GroupScorer,
    batch: Mapping[str, Any],
    reward: CombinedReward,
    *,
    advantage_scale: AdvantageScale = "group",
    mask_truncated_completions: bool = False,
    need_old_logp: bool = False,
) -> Rollout:
    """Sample and score one rollout for a collated prompt batch, every group kept (`sample_rollout`, then
    `score_rollout`)."""
    sampled = sample_rollout(
        scorer, batch, reward, advantage_scale=advantage_scale, mask_truncated_completions=mask_truncated_completions
    )
    return score_rollout(scorer, sampled, need_old_logp=need_old_logp)


def rollout_metrics(rollouts: Rollout | Sequence[Rollout]) -> dict[str, float]:
    """What a step's rollouts log, over all their rows (rewards per term with spreads, zero-spread share,
    lengths, truncation, timings summed): one rollout, or every draw of a dynamic-sampling step."""
    parts = [rollouts] if isinstance(rollouts, Rollout) else list(rollouts)
    lengths = torch.cat([p.mask.sum(-1) for p in parts])  # [N]
    rewards = GroupRewards.cat([p.rewards for p in parts])
    timings = _summed_timings(parts)
    n = int(lengths.numel())
    spread = lambda t: float(t.std()) if n > 1 else 0.0  # noqa: E731
    values: dict[str, float] = {
        "reward": float(rewards.total.mean()),
        "reward_std": spread(rewards.total),
        "frac_zero_std": float(torch.cat([p.zero_std for p in parts]).float().mean()),
        "completion_length": float(lengths.mean()),
        "completion_length_min": float(lengths.min()),
        "completion_length_max": float(lengths.max()),
        "truncated": float(torch.cat([p.truncated for p in parts]).float().mean()),
    }
    for name, t in rewards.terms.items():
        values[f"reward/{name}"], values[f"reward/{name}_std"] = float(t.mean()), spread(t)
    for name, t in rewards.stats.items():
        values[f"reward/{name}"] = float(t.mean()) if t.numel() else 0.0
    for name, sec in timings.items():
        values[f"time/{name}"] = sec
    gen = timings.get("generate", 0.0)
    values["tokens_per_s"] = float(lengths.sum()) / gen if gen > 0 else 0.0
    return values
