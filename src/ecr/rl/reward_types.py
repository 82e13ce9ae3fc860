"""The contract of a GRPO reward term, shared by every term and by `CombinedReward`.

A term takes the decoded completions and the ground-truth labels of a rollout batch and returns one float per
completion (`RewardFn`); one that also reports per-completion statistics implements `RewardWithStats`
(`evaluate` -> `TermResult`). The input checks every term applies (`completion_texts`: None -> "", any other
non-string a `TypeError`; `check_lengths`) live here too. Why a module of its own: the format/accuracy terms
(`ecr.rl.rewards`) and the explanation term (`ecr.rl.explanation_reward`) both build on it without importing
each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


def completion_texts(completions: Sequence[str | None]) -> list[str]:
    """The completions as strings: None (a missing completion) -> "" (scores 0); any other non-string raises."""
    out = []
    for i, c in enumerate(completions):
        if c is not None and not isinstance(c, str):
            raise TypeError(f"completion {i} is a {type(c).__name__}, expected str (or None for a missing one)")
        out.append(c or "")
    return out


class RewardFn(Protocol):
    """A reward term: completions and their ground-truth labels in, one float per completion out."""

    def __call__(self, completions: Sequence[str], labels: Sequence[str]) -> list[float]: ...


@dataclass(frozen=True)
class TermResult:
    """What a reward term with statistics returns: one reward per completion and named per-completion stats.

    `stats[key]` has one float per completion, like `values`.
    """

    values: list[float]
    stats: dict[str, list[float]] = field(default_factory=dict)


@runtime_checkable
class RewardWithStats(Protocol):
    """A reward term that also reports per-completion statistics (logged beside the reward by `CombinedReward`)."""

    def evaluate(self, completions: Sequence[str], labels: Sequence[str]) -> TermResult: ...


def check_lengths(completions: Sequence[str], labels: Sequence[str]) -> None:
    """A `ValueError` unless there is one ground-truth label per completion."""
    if len(completions) != len(labels):
        raise ValueError(f"{len(completions)} completions but {len(labels)} labels")


__all__ = ["RewardFn", "RewardWithStats", "TermResult", "check_lengths", "completion_texts"]
