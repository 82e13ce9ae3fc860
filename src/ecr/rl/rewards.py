"""GRPO rewards: format, accuracy and the explanation (ERV) reward, plus a weighted combination.

All rewards take the decoded completions and the ground-truth labels of a rollout batch and return one float
per completion (the contract: `ecr.rl.reward_types`). The rules are docs/method.md §3, re-derived from the
paper's code:

- format: 1 if the completion is `<think>…</think>` + whitespace + `<answer>…</answer>` (`ecr.prompts`);
  strict=True is the official full match, the default tolerates surrounding whitespace/EOS strings.
- accuracy: 1 if the normalised first answer equals the normalised ground truth; no answer tag -> 0.
- explanation: the share of the think block's sentences whose verifier label set contains the ground truth
  (`ecr.rl.explanation_reward`, re-exported here: the verifier reader, the counts and the anti-gaming
  statistics).

A `None` completion counts as the empty text (0 in every term); any other non-string is a `TypeError`.

Statistics are returned, never stored on the term: a term that has some implements `RewardWithStats`
(`evaluate` -> `TermResult`), and `CombinedReward` logs them as `"{term}/{statistic}"`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Unpack

from ecr.errors import ConfigError, LabelError
from ecr.labels import get_label_set
from ecr.models.sentence_reader import LabelSpec
from ecr.models.verifier import Verifier
from ecr.prompts import extract_answer, is_well_formed
from ecr.rl.explanation_reward import (
    ExplanationOptions,
    ExplanationReward,
    ExplanationScore,
    explanation_ratio,
    explanation_reward,
    sentence_counts,
)
from ecr.rl.reward_types import RewardFn, RewardWithStats, TermResult, check_lengths, completion_texts

# ----------------------------------------------------------------------------------------------- format / accuracy


def format_reward(completions: Sequence[str], *, strict: bool = False, eos_tokens: tuple[str, ...] = ()) -> list[float]:
    """1.0 per well-formed completion. strict=True: official full match (a trailing newline scores 0)."""
    texts = completion_texts(completions)
    return [1.0 if is_well_formed(c, strict=strict, eos_tokens=eos_tokens) else 0.0 for c in texts]


def accuracy_reward(completions: Sequence[str], labels: Sequence[str], label_set: LabelSpec) -> list[float]:
    """1.0 when the first `<answer>` normalises to the ground-truth label (synonyms allowed), else 0.0."""
    ls = get_label_set(label_set)
    check_lengths(completions, labels)
    out = []
    for completion, label in zip(completion_texts(completions), labels, strict=True):
        truth = ls.canonical(label, where="ground-truth label")
        answer = extract_answer(completion)
        out.append(1.0 if answer is not None and ls.normalize(answer) == truth else 0.0)
    return out


@dataclass(frozen=True)
class FormatReward:
    """`format_reward` as a configured reward term."""

    strict: bool = False
    eos_tokens: tuple[str, ...] = ()

    def __call__(self, completions: Sequence[str], labels: Sequence[str]) -> list[float]:
        return format_reward(completions, strict=self.strict, eos_tokens=self.eos_tokens)


class AccuracyReward:
    """`accuracy_reward` as a configured reward term (the label set is resolved once)."""

    def __init__(self, label_set: LabelSpec) -> None:
        self.label_set = get_label_set(label_set)

    def __call__(self, completions: Sequence[str], labels: Sequence[str]) -> list[float]:
        return accuracy_reward(completions, labels, self.label_set)


# ----------------------------------------------------------------------------------------------- combination


@dataclass(frozen=True)
class RewardSpec:
    """A named reward term (a `RewardFn`, or a `RewardWithStats` whose statistics are logged) and its weight."""

    name: str
    fn: RewardFn | RewardWithStats
    weight: float = 1.0


@dataclass(frozen=True)
class RewardOutput:
    """Weighted total per completion, each unweighted term (for separate logging) and extra statistics."""

    total: list[float]
    terms: dict[str, list[float]]
    stats: dict[str, list[float]] = field(default_factory=dict)


class CombinedReward:
    """Sum of weighted reward terms; terms are kept separately so each one can be logged.

    A term implementing `RewardWithStats` is called through `evaluate` and its statistics land in
    `RewardOutput.stats` as `"{name}/{key}"`; any other term is called as a plain `RewardFn`.
    """

    def __init__(self, specs: Sequence[RewardSpec]) -> None:
        names = [s.name for s in specs]
        if not specs or len(set(names)) != len(names):
            raise ConfigError(f"reward terms must be a non-empty list with distinct names, got {names}")
        self.specs = list(specs)

    def __call__(self, completions: Sequence[str], labels: Sequence[str]) -> RewardOutput:
        terms: dict[str, list[float]] = {}
        stats: dict[str, list[float]] = {}
        for spec in self.specs:
            if isinstance(spec.fn, RewardWithStats):
                result = spec.fn.evaluate(completions, labels)
            else:
                result = TermResult(values=list(spec.fn(completions, labels)))
            values = [float(v) for v in result.values]
            if len(values) != len(completions):
                raise ValueError(f"reward {spec.name!r} returned {len(values)} values for {len(completions)}")
            terms[spec.name] = values
            stats.update({f"{spec.name}/{k}": v for k, v in result.stats.items()})
        total = [sum(s.weight * terms[s.name][i] for s in self.specs) for i in range(len(completions))]
        return RewardOutput(total=total, terms=terms, stats=stats)


def default_rewards(
    verifier: Verifier,
    label_set: LabelSpec,
    *,
    weights: Mapping[str, float] | None = None,
    strict_format: bool = False,
    **explanation_kwargs: Unpack[ExplanationOptions],
) -> CombinedReward:
    """The paper's reward: format + accuracy + explanation, weight 1 each unless `weights` says otherwise."""
    w = {"format": 1.0, "accuracy": 1.0, "explanation": 1.0, **dict(weights or {})}
    unknown = set(w) - {"format", "accuracy", "explanation"}
    if unknown:
        raise ConfigError(f"unknown reward weights {sorted(unknown)}; terms are format, accuracy, explanation")
    return CombinedReward(
        [
            RewardSpec("format", FormatReward(strict=strict_format), w["format"]),
            RewardSpec("accuracy", AccuracyReward(label_set), w["accuracy"]),
            RewardSpec("explanation", ExplanationReward(verifier, label_set, **explanation_kwargs), w["explanation"]),
        ]
    )


__all__ = [
    "AccuracyReward",
    "CombinedReward",
    "ExplanationReward",
    "ExplanationScore",
    "FormatReward",
    "LabelError",
    "RewardFn",
    "RewardOutput",
    "RewardSpec",
    "RewardWithStats",
    "TermResult",
    "accuracy_reward",
    "default_rewards",
    "explanation_ratio",
    "explanation_reward",
    "format_reward",
    "sentence_counts",
]
