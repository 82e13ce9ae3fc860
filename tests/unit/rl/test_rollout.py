"""Rollout bookkeeping (B prompt rows, N = B·G completions): keeping whole groups and the sampling arguments."""

from __future__ import annotations

from typing import Any, cast

import pytest
import torch

from ecr.models import EncodedPrompt
from ecr.models.scoring import SamplingFilters, TokenScores
from ecr.rl.advantages import group_advantages, zero_std_groups
from ecr.rl.rewards import CombinedReward, RewardSpec
from ecr.rl.rollout import (
    GroupRewards,
    PromptSource,
    Rollout,
    collect_rollout,
    rollout_metrics,
    sample_rollout,
    score_rollout,
)
from ecr.rl.scorer import GroupScorer, SamplingSettings, build_scorer


def _prompt(b: int, p: int = 3) -> EncodedPrompt:
    """B distinct encoded prompts (no repetition)."""
    return EncodedPrompt(
        input_ids=torch.arange(b * p).reshape(b, p),
        inputs_embeds=torch.arange(b * p * 2.0).reshape(b, p, 2),
        attention_mask=torch.ones(b, p, dtype=torch.long),
        position_ids=torch.arange(p).expand(3, b, p).clone(),
        next_position=torch.full((b,), p),
        generate_kwargs={"video_grid_thw": torch.arange(b * 3).reshape(b, 3)},
    )


class Encoder:
    """Encodes a collated batch of B prompts as `_prompt(B)` does (what a trainable tower re-encodes)."""

    def encode_prompt(self, batch) -> EncodedPrompt:
        return _prompt(batch["input_ids"].shape[0])


def _rollout(totals: list[float], group: int) -> Rollout:
    n, c = len(totals), 4
    b = n // group
    prompt = _prompt(b)  # B rows: the rollout does not repeat its prompts
    rewards = torch.tensor(totals)
    return Rollout(
        prompt=prompt,
        sources=(PromptSource({"input_ids": torch.zeros(b, 3)}),),
        completion_ids=torch.arange(n * c).reshape(n, c),
        mask=torch.ones(n, c),
        truncated=torch.zeros(n, dtype=torch.bool),
        texts=[f"t{i}" for i in range(n)],
        labels=["happy"] * n,
        clip_ids=[f"clip{i // group}" for i in range(n)],
        rewards=GroupRewards(rewards, terms={"r": rewards}, stats={"s": torch.arange(n, dtype=torch.float32)}),
        advantages=group_advantages(rewards, group),
        zero_std=zero_std_groups(rewards, group),
        group_size=group,
        old_logp=torch.randn(n, c),
    )


def test_keep_groups_drops_whole_groups_consistently() -> None:
    r = _rollout([1.0, 1.0, 0.0, 1.0, 0.5, 0.5], group=2)  # groups: zero spread, spread, zero spread
    assert r.zero_std.tolist() == [True, False, True]
    kept = r.keep_groups(~r.zero_std)
    assert kept.clip_ids == ["clip1", "clip1"] and kept.texts == ["t2", "t3"]
    assert torch.equal(kept.completion_ids, r.completion_ids[2:4]) and torch.equal(kept.old_logp, r.old_logp[2:4])
    assert torch.equal(kept.prompt.input_ids, r.prompt.input_ids[1:2])  # the kept group's one prompt row
    assert torch.equal(kept.prompt.position_ids, r.prompt.position_ids[:, 1:2])
    assert torch.equal(kept.prompt.generate_kwargs["video_grid_thw"], r.prompt.generate_kwargs["video_grid_thw"][1:2])
    assert kept.rewards.terms["r"].tolist() == [0.0, 1.0] and kept.rewards.stats["s"].tolist() == [2, 3]
    assert kept.zero_std.tolist() == [False] and kept.num_tokens == 8
    assert torch.allclose(kept.advantages, r.advantages[2:4])
    assert kept.sources[0].rows.tolist() == [1]


def test_a_filtered_rollout_re_encodes_only_its_kept_prompts() -> None:
    """A trainable tower re-encodes the collated batch (all B prompts): the rows must be the kept groups' ones,
    B' of them (N' = B'·G completions), in the rollout's order, however many times groups were dropped."""
    r = _rollout([1.0, 2.0, 3.0, 3.0, 0.0, 1.0, 5.0, 6.0], group=2)  # groups 0, 2, 3 have spread
    assert torch.equal(r.update_prompt(Encoder()).inputs_embeds, r.prompt.inputs_embeds)
    kept = r.keep_groups(~r.zero_std).keep_groups(torch.tensor([False, True, True]))  # then drop group 0 too
    assert kept.sources[0].rows.tolist() == [2, 3] and kept.clip_ids == ["clip2", "clip2", "clip3", "clip3"]
    again = kept.update_prompt(Encoder())
    assert again.batch_size * kept.group_size == kept.completion_ids.shape[0] == 4
    for name in ("input_ids", "inputs_embeds", "attention_mask", "position_ids", "next_position"):
        assert torch.equal(getattr(again, name), getattr(kept.prompt, name)), name


def test_sampling_arguments_turn_hf_defaults_off() -> None:
    kw = SamplingSettings(max_new_tokens=7, temperature=0.9).generate_kwargs()
    assert kw["do_sample"] and kw["top_k"] == 0 and kw["top_p"] == 1.0 and "min_new_tokens" not in kw
    assert SamplingSettings(min_new_tokens=5, min_p=0.1).generate_kwargs()["min_p"] == 0.1


def test_an_untrainable_encoding_is_reused_and_keeps_no_media() -> None:
    """Frozen towers and embeddings: the rollout keeps no collated batch (no media tensors in the buffer) and
    every update pass reuses its B-row encoding."""
    r = _rollout([1.0, 2.0, 3.0, 3.0], group=2)
    r.sources = ()
    assert r.update_prompt(Encoder()) is r.prompt
    assert r.keep_groups(torch.tensor([True, False])).update_prompt(Encoder()).batch_size == 1


def _shifted(r: Rollout, offset: int) -> Rollout:
    """A second draw: other prompts (ids, embeddings shifted) with a shorter prompt and longer completions."""
    prompt = r.prompt.map_rows(lambda t, dim: t)
    short = EncodedPrompt(
        input_ids=prompt.input_ids[:, 1:] + offset,
        inputs_embeds=prompt.inputs_embeds[:, 1:] + offset,
        attention_mask=prompt.attention_mask[:, 1:],
        position_ids=prompt.position_ids[:, :, 1:],
        next_position=prompt.next_position - 1,
        generate_kwargs={"video_grid_thw": prompt.generate_kwargs["video_grid_thw"] + offset},
    )
    n = r.completion_ids.shape[0]
    return Rollout(**{
        **r.__dict__, "prompt": short, "completion_ids": torch.arange(n * 6).reshape(n, 6) + offset,
        "mask": torch.ones(n, 6), "old_logp": torch.randn(n, 6), "clip_ids": [f"x{c}" for c in r.clip_ids],
        "timings": {"generate": 2.0},
    })  # fmt: skip


def test_joined_draws_are_one_left_and_right_padded_batch() -> None:
    """Dynamic sampling joins draws: prompts left-padded (masked), completions right-padded (masked), rows in
    order, every per-row field carried, sources kept per draw, timings summed."""
    a = _rollout([1.0, 2.0, 3.0, 3.0], group=2)
    a.timings = {"generate": 1.0}
    b = _shifted(_rollout([0.0, 1.0, 5.0, 5.0], group=2), offset=100)
    j = Rollout.concat([a, b])
    assert j.num_groups == 4 and j.completion_ids.shape == (8, 6) and j.prompt.input_ids.shape == (4, 3)
    assert torch.equal(j.prompt.input_ids[2:, 1:], b.prompt.input_ids) and j.prompt.attention_mask[2:, 0].sum() == 0
    assert torch.equal(j.prompt.inputs_embeds[2:, 0], torch.zeros(2, 2))
    assert torch.equal(j.prompt.position_ids[:, 2:, 1:], b.prompt.position_ids)
    assert torch.equal(j.completion_ids[:4, :4], a.completion_ids) and j.mask[:4, 4:].sum() == 0
    assert torch.equal(j.old_logp[4:], b.old_logp) and j.old_logp[:4, 4:].abs().sum() == 0
    assert j.sampler_logp is None  # neither draw sampled with a filter
    assert j.clip_ids[4:] == b.clip_ids and j.zero_std.tolist() == [False, True, False, True]
    assert torch.equal(j.prompt.generate_kwargs["video_grid_thw"][2:], b.prompt.generate_kwargs["video_grid_thw"])
    assert len(j.sources) == 2 and j.timings == {"generate": 3.0}
    kept = j.keep_groups(~j.zero_std)  # one group of each draw: each source keeps its own row
    assert [s.rows.tolist() for s in kept.sources] == [[0], [0]]
    assert kept.update_prompt(Encoder()).batch_size == 2


def test_first_groups_inert_and_recomputed_advantages() -> None:
    r = _rollout([1.0, 2.0, 3.0, 5.0, 0.0, 4.0], group=2)
    assert r.first_groups(2).clip_ids == ["clip0", "clip0", "clip1", "clip1"] and r.first_groups(3) is r
    inert = r.inert()
    assert inert.num_tokens == 0 and inert.advantages.abs().sum() == 0 and inert.texts == r.texts
    batch = r.with_advantages("batch")
    assert torch.allclose(batch.advantages, group_advantages(r.rewards.total, 2, scale="batch"))
    assert not torch.allclose(batch.advantages, r.advantages)


def test_metrics_of_several_draws_cover_all_their_rows() -> None:
    a = _rollout([1.0, 1.0, 3.0, 3.0], group=2)  # both groups flat
    b = _rollout([0.0, 1.0, 5.0, 5.0], group=2)  # one flat
    a.timings, b.timings = {"generate": 1.0}, {"generate": 3.0}
    m = rollout_metrics([a, b])
    assert m["frac_zero_std"] == 0.75 and m["reward"] == sum([1, 1, 3, 3, 0, 1, 5, 5]) / 8
    assert m["time/generate"] == 4.0 and m["tokens_per_s"] == 32 / 4.0
    assert rollout_metrics(a)["frac_zero_std"] == 1.0


class FakePolicy:
    """A policy whose passes are recorded: `generate` draws fixed ids, `score_completions` returns constant
    scores and, asked for a filtered sampler's log-probs, those too."""

    def __init__(self) -> None:
        self.scored: list[SamplingFilters] = []
        self.scored_rows: list[int] = []

    def encode_prompt(self, batch) -> EncodedPrompt:
        return _prompt(len(batch["meta"]["ids"]))

    def generate(self, prompt, *, group_size, share_prefix, **kwargs) -> torch.Tensor:
        self.sampled_with = kwargs
        return torch.arange(prompt.batch_size * group_size * 3).reshape(-1, 3) + 10

    def completion_mask(self, ids):
        return torch.ones_like(ids, dtype=torch.bool), torch.zeros(ids.shape[0], dtype=torch.bool)

    def decode(self, ids) -> list[str]:
        return [f"c{i}" for i in range(ids.shape[0])]

    def prompt_encoding_is_trainable(self) -> bool:
        return False

    def score_completions(self, prompt, ids, mask, *, filters, **kwargs) -> TokenScores:
        self.scored.append(filters)
        self.scored_rows.append(ids.shape[0])
        q = torch.full(ids.shape, -0.5) if filters.active else None
        return TokenScores(torch.full(ids.shape, -1.0), torch.ones(ids.shape), sampler_logprobs=q)


@pytest.mark.parametrize(
    ("sampling", "need_old", "passes", "recorded"),
    [
        ({}, False, 0, False),  # π's own samples, μ = 1: no sampling-time pass (as before)
        ({}, True, 1, False),  # μ > 1: the old log-probs, no q
        ({"top_k": 5}, False, 1, True),  # a filter on: the pass runs even at μ = 1, and records q
        ({"top_p": 0.9, "min_p": 0.1}, True, 1, True),
    ],
)
def test_the_rollout_records_the_sampler_logprobs_only_with_a_filter_on(sampling, need_old, passes, recorded) -> None:
    policy = FakePolicy()
    settings = SamplingSettings(max_new_tokens=3, **sampling)
    scorer = GroupScorer(cast(Any, policy), group_size=2, sampling=settings)
    batch = {"meta": {"ids": ["a", "b"], "label": ["happy", "sad"]}}
    reward = CombinedReward([RewardSpec("r", lambda texts, labels: [float(t[-1]) for t in texts])])
    r = collect_rollout(scorer, batch, reward, need_old_logp=need_old)
    assert policy.sampled_with["top_k"] == settings.top_k and policy.sampled_with["top_p"] == settings.top_p
    assert len(policy.scored) == passes and all(f == settings.filters() for f in policy.scored)
    assert (r.sampler_logp is not None) == recorded and (r.old_logp is not None) == (passes == 1)
    if recorded:
        assert torch.equal(r.sampler_logp, torch.full((4, 3), -0.5)) and "old_logp" in r.timings
        kept = r.keep_groups(torch.tensor([False, True]))
        assert kept.sampler_logp.shape == (2, 3)
    policy.scored.clear()
    assert scorer.scores(r.prompt, r.completion_ids, r.mask).sampler_logprobs is None  # the update pass: π only
    assert policy.scored == [SamplingFilters()]


def test_log_prob_passes_run_on_the_kept_groups_only() -> None:
    """A group filter (zero spread, dynamic sampling) runs before `score_rollout`: the sampling-time pass scores
    the kept rows only, and the collated batch is dropped once scored (a frozen encoding keeps no media)."""
    policy = FakePolicy()
    scorer = GroupScorer(cast(Any, policy), group_size=2, sampling=SamplingSettings(max_new_tokens=3))
    batch = {"input_ids": torch.zeros(3, 3), "meta": {"ids": ["a", "b", "c"], "label": ["x"] * 3}}
    values = [0.0, 1.0, 5.0, 5.0, 0.0, 1.0]  # by completion c0..c5: the middle group has no spread
    reward = CombinedReward([RewardSpec("r", lambda texts, labels: [values[int(t[1:])] for t in texts])])
    sampled = sample_rollout(scorer, batch, reward)
    assert sampled.zero_std.tolist() == [False, True, False] and sampled.old_logp is None and policy.scored == []
    kept = sampled.keep_groups(~sampled.zero_std)
    assert [s.rows.tolist() for s in kept.sources] == [[0, 2]]
    scored = score_rollout(scorer, kept, need_old_logp=True)
    assert policy.scored_rows == [4] and scored.old_logp.shape == (4, 3) and scored.sources == ()
    assert "old_logp" in scored.timings and "old_logp" not in sampled.timings


def test_sampling_settings_no_log_prob_pass_accounts_for_are_named_when_the_scorer_is_built() -> None:
    """The repetition penalty and min_new_tokens reshape what `generate` samples, and neither the scorer nor the
    off-policy correction covers them: building the scorer says so instead of training on the wrong ratios."""
    assert SamplingSettings().unscored() == [] and SamplingSettings(top_k=5).unscored() == []
    both = SamplingSettings(repetition_penalty=1.1, min_new_tokens=2)
    assert both.unscored() == ["repetition_penalty", "min_new_tokens"]
    policy = cast(Any, FakePolicy())
    with pytest.warns(UserWarning, match="repetition_penalty and min_new_tokens reshape what GRPO samples"):
        build_scorer(policy, group_size=2, sampling=both, chunk_tokens=None, share_prefix=True, beta=0.0,
                     reference="auto", reference_device=None)  # fmt: skip
