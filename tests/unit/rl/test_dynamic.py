"""Dynamic sampling's draw loop (`ecr.rl.dynamic.fill_groups`): when it draws again, what it keeps, its counts."""

from __future__ import annotations

import pytest
import torch

from ecr.models import EncodedPrompt
from ecr.rl.dynamic import fill_groups
from ecr.rl.rollout import GroupRewards, Rollout


def _rollout(flat: list[bool], tag: str) -> Rollout:
    """A rollout of len(flat) groups of 2; a group is zero-spread where `flat`."""
    rewards = torch.tensor([v for f in flat for v in ((1.0, 1.0) if f else (0.0, 1.0))])
    n, b = rewards.numel(), len(flat)
    prompt = EncodedPrompt(
        input_ids=torch.zeros(b, 2, dtype=torch.long),
        inputs_embeds=torch.zeros(b, 2, 1),
        attention_mask=torch.ones(b, 2, dtype=torch.long),
        position_ids=torch.zeros(1, b, 2, dtype=torch.long),
        next_position=torch.full((b,), 2),
    )
    return Rollout(
        prompt=prompt,
        group_size=2,
        completion_ids=torch.zeros(n, 3, dtype=torch.long),
        mask=torch.ones(n, 3),
        truncated=torch.zeros(n, dtype=torch.bool),
        texts=[f"{tag}{i}" for i in range(n)],
        labels=["x"] * n,
        clip_ids=[f"{tag}{i // 2}" for i in range(n)],
        rewards=GroupRewards(rewards),
        advantages=torch.zeros(n),
        zero_std=torch.tensor(flat),
    )


def _source(*draws: list[bool]):
    queue = [_rollout(flat, f"d{i}_") for i, flat in enumerate(draws)]
    calls = []

    def draw() -> Rollout | None:
        calls.append(1)
        return queue.pop(0) if queue else None

    return draw, calls


def test_draws_until_the_target_is_held_and_trims_the_excess() -> None:
    draw, calls = _source([True, False, True], [True, True, True], [False, False, True], [False, False, False])
    f = fill_groups(draw, max_rounds=4)
    assert f.target == 3 and f.rounds == 3 and len(calls) == 3 and not f.short and not f.exhausted
    assert [c for r in f.kept for c in r.clip_ids[::2]] == ["d0_1", "d2_0", "d2_1"]
    assert [r.num_groups for r in f.drawn] == [3, 3, 3]


def test_a_first_draw_full_of_spread_draws_nothing_more() -> None:
    draw, calls = _source([False, False], [False, False])
    f = fill_groups(draw, max_rounds=4)
    assert f.rounds == 1 and len(calls) == 1 and f.num_kept == 2


def test_the_round_limit_stops_short_and_says_so() -> None:
    draw, calls = _source([True, True], [True, False], [True, True], [False, False])
    f = fill_groups(draw, max_rounds=2)
    assert f.rounds == 3 and f.num_kept == 1 and f.short
    assert fill_groups(_source([True, True], [False, False])[0], max_rounds=0).rounds == 1


def test_running_out_of_prompts_trains_what_there_is() -> None:
    draw, _ = _source([True, False])
    f = fill_groups(draw, max_rounds=4)
    assert f.exhausted and f.rounds == 1 and f.num_kept == 1 and f.short
    empty = fill_groups(_source()[0], max_rounds=4)
    assert empty.rounds == 0 and empty.kept == [] and not empty.short


def test_ranks_draw_again_while_any_rank_needs_groups() -> None:
    """`agree` decides for every rank: a rank already full keeps drawing (and keeps nothing more) while another
    rank is short, so both make the same number of draws."""
    draw, calls = _source([False, False], [False, True], [True, False])
    asked: list[bool] = []

    def agree(need_more: bool) -> bool:  # another rank is short for the first two decisions
        asked.append(need_more)
        return len(asked) < 3

    f = fill_groups(draw, max_rounds=4, agree=agree)
    assert f.rounds == 3 and len(calls) == 3 and asked == [False, False, False]
    assert [r.num_groups for r in f.kept] == [2] and f.num_kept == 2 and not f.short


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_rounds"):
        fill_groups(lambda: None, max_rounds=-1)
