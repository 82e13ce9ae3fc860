"""GRPO rewards: format, accuracy and the explanation (ERV) reward, plus a weighted combination.

All rewards take the decoded completions and the ground-truth labels of a rollout batch and return one float
per completion. The rules are docs/method.md §3, re-derived from the paper's code:

- format: 1 if the completion is `<think>…</think>` + whitespace + `<answer>…</answer>` (`ecr.prompts`);
  strict=True is the official full match, the default tolerates surrounding whitespace/EOS strings.
- accuracy: 1 if the normalised first answer equals the normalised ground truth; no answer tag -> 0.
- explanation: the share of the think block's sentences whose verifier label set contains the ground truth,
  over non-neutral sentences (over all sentences when the truth is neutral). The sentences are read by the one
  `ecr.models.sentence_reader.SentenceReader` (splitter, mapping checked at construction — a `LabelError` before
  training, not a KeyError mid-step —, τ, decision rule, the 64-sentence cap, the non-finite check), all of a
  batch in ONE verifier call, none when there is no sentence.

Anti-gaming: `ExplanationReward.evaluate` returns per-completion `duplicate_fraction` and `label_word_density`
(`ExplanationScore`) beside the rewards; `dedupe_sentences` and `penalty` act on them (see `ExplanationReward`).
A `None` completion counts as the empty text (0 in every term); any other non-string is a `TypeError`.

Statistics are returned, never stored on the term: a term that has some implements `RewardWithStats`
(`evaluate` -> `TermResult`), and `CombinedReward` logs them as `"{term}/{statistic}"`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol, Unpack, runtime_checkable

import torch

from ecr.errors import ConfigError, LabelError
from ecr.labels import SYNONYM_GROUPS, LabelSet, clean_text, get_label_set
from ecr.models.sentence_reader import LabelSpec, MappingSpec, ReaderOptions, SentenceReader
from ecr.models.verifier import DEFAULT_MAX_LABELS, DEFAULT_THRESHOLD, Verifier
from ecr.prompts import extract_answer, extract_think, is_well_formed
from ecr.sentences import Splitter

_WORD = re.compile(r"[a-z]+")


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


# ----------------------------------------------------------------------------------------------- format / accuracy


def format_reward(completions: Sequence[str], *, strict: bool = False, eos_tokens: tuple[str, ...] = ()) -> list[float]:
    """1.0 per well-formed completion. strict=True: official full match (a trailing newline scores 0)."""
    texts = completion_texts(completions)
    return [1.0 if is_well_formed(c, strict=strict, eos_tokens=eos_tokens) else 0.0 for c in texts]


def accuracy_reward(completions: Sequence[str], labels: Sequence[str], label_set: LabelSpec) -> list[float]:
    """1.0 when the first `<answer>` normalises to the ground-truth label (synonyms allowed), else 0.0."""
    ls = get_label_set(label_set)
    _check_lengths(completions, labels)
    out = []
    for completion, label in zip(completion_texts(completions), labels, strict=True):
        truth = ls.canonical(label, where="ground-truth label")
        answer = extract_answer(completion)
        out.append(1.0 if answer is not None and ls.normalize(answer) == truth else 0.0)
    return out


def _check_lengths(completions: Sequence[str], labels: Sequence[str]) -> None:
    if len(completions) != len(labels):
        raise ValueError(f"{len(completions)} completions but {len(labels)} labels")


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


# ----------------------------------------------------------------------------------------------- explanation maths


def sentence_counts(
    label_sets: torch.Tensor, owner: torch.Tensor, truth: torch.Tensor, neutral_idx: int | None, batch: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-completion counts N, N_nn, M from the sentences' label sets.

    label_sets: bool [S, C] (from `decide`); owner: long [S] completion index of each sentence;
    truth: long [B] verifier class of each completion's ground truth -> (N, N_nn, M), each long [B].
    A sentence is neutral iff its label set is exactly {neutral}.
    """
    s = label_sets.shape[0]
    ones = torch.ones(s, dtype=torch.long)
    if neutral_idx is None:
        neutral = torch.zeros(s, dtype=torch.bool)
    else:
        neutral = label_sets[:, neutral_idx] & (label_sets.sum(dim=-1) == 1)  # [S]
    match = label_sets.gather(1, truth[owner].unsqueeze(1)).squeeze(1)  # [S]
    zeros = torch.zeros(batch, dtype=torch.long)
    n = zeros.index_add(0, owner, ones)
    n_nn = zeros.index_add(0, owner, (~neutral).long())
    m = zeros.index_add(0, owner, match.long())
    return n, n_nn, m


def explanation_ratio(
    n: torch.Tensor, n_nn: torch.Tensor, m: torch.Tensor, truth_is_neutral: torch.Tensor
) -> torch.Tensor:
    """Reward float [B]: 0 if N=0; M/N if the truth is neutral; else M/N_nn, or 0 when N_nn=0."""
    denom = torch.where(truth_is_neutral, n, n_nn).float()
    return torch.where(denom > 0, m.float() / denom.clamp(min=1), torch.zeros_like(denom))


# ----------------------------------------------------------------------------------------------- explanation reward


@dataclass(frozen=True)
class ExplanationScore:
    """One completion's explanation reward and the counts and gaming statistics behind it.

    duplicate_fraction: 1 - distinct/total sentences (sentences compared lower-cased, whitespace-collapsed);
    label_word_density: share of the think block's words that are emotion-label words (any task label or
    synonym, any verifier class name).
    """

    reward: float
    base_reward: float
    n_sentences: int
    n_non_neutral: int
    n_match: int
    duplicate_fraction: float
    label_word_density: float
    has_think: bool
    capped: bool = False  # more than `max_sentences` sentences: only the first ones were scored


class ExplanationReward:
    """The ERV explanation reward, configured once (label mapping resolved and checked before training).

    The explanation is read by a `SentenceReader` (`self.reader`: splitter, mapping, τ, decision rule, sentence
    cap), the same reader the metrics, judges, reranking and `ecr predict` use.

    Args:
        verifier: the verifier the reader asks (per-sentence probabilities).
        label_set: the task labels its classes map onto.
        **reader: the reader's settings (`mapping`, `threshold`, `max_labels`, `splitter`, `dedupe_sentences`,
            `max_sentences`: `ecr.models.sentence_reader.SentenceReader`); with `dedupe_sentences` a repeated
            sentence counts once in N, N_nn and M, so repeating one emotional sentence stops raising M/N; a
            completion over `max_sentences` sentences is `capped` (in the statistics).
        penalty: when > 0, the reward becomes
            max(0, base - penalty * (duplicate_fraction + max(0, label_word_density - label_word_allowance)));
            with the default 0 the statistics are only reported (`evaluate(...).stats`, `score()`).
        label_word_allowance: label-word density tolerated before the penalty applies (natural explanations
            name the emotion once or twice).

    Raises:
        LabelError: a task label has no class in the verifier's label space.
    """

    STAT_KEYS: tuple[str, ...] = (
        "n_sentences",
        "n_non_neutral",
        "n_match",
        "duplicate_fraction",
        "label_word_density",
        "capped",
    )

    def __init__(
        self,
        verifier: Verifier,
        label_set: LabelSpec,
        *,
        penalty: float = 0.0,
        label_word_allowance: float = 0.1,
        **reader: Unpack[ReaderOptions],
    ) -> None:
        if penalty < 0:
            raise ConfigError(f"penalty must be >= 0, got {penalty}")
        self.reader = SentenceReader(verifier, label_set, **reader)
        self.penalty = penalty
        self.label_word_allowance = label_word_allowance
        self._label_words = self._collect_label_words()

    # the reader's settings, read-only here (their one home is `self.reader`)
    verifier = property(lambda self: self.reader.verifier)
    label_set = property(lambda self: self.reader.label_set)
    threshold = property(lambda self: self.reader.threshold)
    max_sentences = property(lambda self: self.reader.max_sentences)

    def _collect_label_words(self) -> frozenset[str]:
        words = set(self.reader.verifier_labels) | set(self.label_set.labels)
        for group in SYNONYM_GROUPS:
            if group & words:
                words |= group
        return frozenset(w for w in words if " " not in w)

    def label_word_density(self, completion: str) -> float:
        """Share of the think block's words that are label words (0 when there is no word)."""
        words = _WORD.findall((extract_think(completion) or "").lower())
        return sum(w in self._label_words for w in words) / len(words) if words else 0.0

    def score(self, completions: Sequence[str], labels: Sequence[str]) -> list[ExplanationScore]:
        """Scores and statistics per completion (one verifier call for the whole batch, none if no sentence)."""
        _check_lengths(completions, labels)
        completions = completion_texts(completions)
        reader, b = self.reader, len(completions)
        truth_names = [self.label_set.canonical(lbl, where="ground-truth label") for lbl in labels]
        truth = torch.tensor([reader.mapping[t] for t in truth_names], dtype=torch.long)  # [B]
        truth_is_neutral = truth == (reader.neutral_idx if reader.neutral_idx is not None else -1)  # [B]
        read = reader.read(completions)
        n, n_nn, m = sentence_counts(read.sets, read.owner, truth, reader.neutral_idx, b)
        base = explanation_ratio(n, n_nn, m, truth_is_neutral).tolist()
        scores = []
        for i, (completion, think) in enumerate(zip(completions, read.per, strict=True)):
            density = self.label_word_density(completion)
            gaming = think.duplicate_fraction + max(0.0, density - self.label_word_allowance)
            reward = max(0.0, base[i] - self.penalty * gaming) if self.penalty > 0 else base[i]
            scores.append(
                ExplanationScore(
                    reward=float(reward),
                    base_reward=float(base[i]),
                    n_sentences=int(n[i]),
                    n_non_neutral=int(n_nn[i]),
                    n_match=int(m[i]),
                    duplicate_fraction=float(think.duplicate_fraction),
                    label_word_density=float(density),
                    has_think=think.has_think,
                    capped=think.capped,
                )
            )
        return scores

    def evaluate(self, completions: Sequence[str], labels: Sequence[str]) -> TermResult:
        """Rewards plus their per-completion statistics (`STAT_KEYS` of `ExplanationScore`, as floats)."""
        scores = self.score(completions, labels)
        rows = [asdict(s) for s in scores]
        return TermResult(
            values=[s.reward for s in scores], stats={k: [float(r[k]) for r in rows] for k in self.STAT_KEYS}
        )

    def __call__(self, completions: Sequence[str], labels: Sequence[str]) -> list[float]:
        return self.evaluate(completions, labels).values


def explanation_reward(
    completions: Sequence[str],
    labels: Sequence[str],
    verifier: Verifier,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    max_labels: int = DEFAULT_MAX_LABELS,
    splitter: str | Splitter = "official",
    mapping: MappingSpec = "auto",
    label_set: LabelSpec | None = None,
) -> list[float]:
    """The explanation reward as one function call (docs/method.md §3); see `ExplanationReward` for the options.

    `label_set` defaults to the distinct ground-truth labels of this batch; pass the task's set (e.g. "dfew")
    so synonyms in `labels` normalise. Training code should build `ExplanationReward` once instead, so a bad
    mapping fails before the first step.
    """
    _check_lengths(completions, labels)
    if not completions:
        return []
    ls = label_set if label_set is not None else LabelSet("batch", tuple(sorted({clean_text(x) for x in labels})))
    reward = ExplanationReward(
        verifier, ls, mapping=mapping, threshold=threshold, max_labels=max_labels, splitter=splitter
    )
    return reward(completions, labels)


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
    **explanation_kwargs: object,
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
            RewardSpec("explanation", ExplanationReward(verifier, label_set, **explanation_kwargs), w["explanation"]),  # type: ignore[arg-type]
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
