"""GRPO rewards: format, accuracy and the explanation (ERV) reward, plus a weighted combination.

All rewards take the decoded completions and the ground-truth labels of a rollout batch and return one float
per completion. The rules are docs/method.md §3, re-derived from the paper's code:

- format: 1 if the completion is `<think>…</think>` + whitespace + `<answer>…</answer>` (`ecr.prompts`);
  strict=True is the official full match, the default tolerates surrounding whitespace/EOS strings.
- accuracy: 1 if the normalised first answer equals the normalised ground truth; no answer tag -> 0.
- explanation: the share of the think block's sentences whose verifier label set contains the ground truth,
  over non-neutral sentences (over all sentences when the truth is neutral). All sentences of all completions
  go through ONE batched verifier call, and none at all when there is no sentence.

A ground-truth label that cannot be mapped into the verifier's label space is a `LabelError` raised when
`ExplanationReward` is built, i.e. before training starts, not in the middle of a step (the research code
crashed with a KeyError there). Non-finite verifier probabilities mid-run are a `VerifierOutputError`: they
never become rewards or metrics.

Anti-gaming: a policy can inflate M/N by repeating one emotional sentence or by stuffing label words.
`ExplanationReward.evaluate` returns per-completion `duplicate_fraction` and `label_word_density` (see
`ExplanationScore`) beside the rewards, and two opt-in options act on them (`dedupe_sentences`, `penalty`),
documented on `ExplanationReward`.

Robustness: a `None` completion (a generation or an API answer that is missing) counts as the empty text,
scoring 0 in every term; anything else that is not a string is a `TypeError` naming its index. The explanation
reward scores at most `max_sentences` sentences per completion (the first ones; 64 by default, None = all), so a
degenerate 10,000-sentence completion costs what 64 do; each capped completion is counted (statistic `capped`).

Statistics are returned, never stored on the term: a term that has some implements `RewardWithStats`
(`evaluate` -> `TermResult`), and `CombinedReward` logs them as `"{term}/{statistic}"`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol, runtime_checkable

import torch

from ecr.errors import ConfigError, LabelError, VerifierOutputError
from ecr.labels import (
    GOEMOTIONS_LABELS,
    GOEMOTIONS_MAPPING,
    NEUTRAL,
    SYNONYM_GROUPS,
    LabelSet,
    clean_text,
    get_label_set,
)
from ecr.models.verifier import DEFAULT_MAX_LABELS, DEFAULT_THRESHOLD, Verifier, decide
from ecr.prompts import extract_answer, extract_think, is_well_formed
from ecr.sentences import Splitter, get_splitter

LabelSpec = LabelSet | str | Sequence[str]
MappingSpec = Mapping[str, str] | Literal["auto", "identity"] | None
_WORD = re.compile(r"[a-z]+")
DEFAULT_MAX_SENTENCES = 64


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

    Args:
        verifier: any `Verifier` (`label_names` + `probs`).
        label_set: the task's label set (name, list or LabelSet); ground-truth labels are normalised with it.
        mapping: task label -> verifier class name. "auto" (default): the verifier's own saved `mapping`
            if it has one, else `GOEMOTIONS_MAPPING` when the verifier speaks the 28 GoEmotions classes, else the
            identity; "identity"/None: same-named classes; a dict: explicit (missing keys fall back to same name).
        threshold: τ. None: the verifier's saved `threshold` attribute, else 0.1 (the paper's value).
        max_labels: at most this many labels per sentence (top by p).
        splitter: "official" (paper regex), "pysbd", or a callable text -> sentences.
        dedupe_sentences: when True, a sentence repeated within one completion (same text after lower-casing
            and whitespace collapsing) is scored once: it counts once in N, N_nn and M and is sent to the
            verifier once. Repeating one emotional sentence then stops raising M/N.
        penalty: when > 0, the reward becomes
            max(0, base - penalty * (duplicate_fraction + max(0, label_word_density - label_word_allowance)));
            with the default 0 the statistics are only reported (`evaluate(...).stats`, `score()`).
        label_word_allowance: label-word density tolerated before the penalty applies (natural explanations
            name the emotion once or twice).
        max_sentences: sentences scored per completion (the first ones, after `dedupe_sentences`); a
            completion with more is `capped` (counted in the statistics). None: no cap.

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
        mapping: MappingSpec = "auto",
        threshold: float | None = None,
        max_labels: int = DEFAULT_MAX_LABELS,
        splitter: str | Splitter = "official",
        dedupe_sentences: bool = False,
        penalty: float = 0.0,
        label_word_allowance: float = 0.1,
        max_sentences: int | None = DEFAULT_MAX_SENTENCES,
    ) -> None:
        from ecr.labels import resolve_verifier_mapping

        if max_sentences is not None and max_sentences < 1:
            raise ConfigError(f"max_sentences must be >= 1 or None, got {max_sentences}")
        self.max_sentences = max_sentences

        if max_labels < 1:
            raise ConfigError(f"max_labels must be >= 1, got {max_labels}")
        if penalty < 0:
            raise ConfigError(f"penalty must be >= 0, got {penalty}")
        self.verifier = verifier
        self.label_set = get_label_set(label_set)
        self.verifier_labels = [clean_text(n) for n in verifier.label_names]
        chosen = self._auto_mapping(verifier, self.verifier_labels) if mapping == "auto" else mapping
        if chosen == "identity":
            chosen = None
        self.mapping = resolve_verifier_mapping(self.label_set, self.verifier_labels, chosen)  # raises LabelError
        self.threshold = float(
            threshold if threshold is not None else getattr(verifier, "threshold", DEFAULT_THRESHOLD)
        )
        self.max_labels = max_labels
        self.splitter = get_splitter(splitter)
        self.dedupe_sentences = dedupe_sentences
        self.penalty = penalty
        self.label_word_allowance = label_word_allowance
        self.neutral_idx = self.verifier_labels.index(NEUTRAL) if NEUTRAL in self.verifier_labels else None
        self._label_words = self._collect_label_words()

    @staticmethod
    def _auto_mapping(verifier: Verifier, vlabels: list[str]) -> Mapping[str, str] | None:
        saved = getattr(verifier, "mapping", None)
        if saved:
            return saved
        if tuple(vlabels) == GOEMOTIONS_LABELS:
            return GOEMOTIONS_MAPPING
        return None

    def _collect_label_words(self) -> frozenset[str]:
        words = set(self.verifier_labels) | set(self.label_set.labels)
        for group in SYNONYM_GROUPS:
            if group & words:
                words |= group
        return frozenset(w for w in words if " " not in w)

    def sentences(self, completion: str) -> tuple[list[str], bool, float]:
        """(sentences to score, has a think block, duplicate fraction) of one completion."""
        think = extract_think(completion)
        if think is None:
            return [], False, 0.0
        sents = self.splitter(think)
        keys = [" ".join(s.lower().split()) for s in sents]
        dup = 1.0 - len(set(keys)) / len(keys) if keys else 0.0
        if self.dedupe_sentences:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}  # key -> index of first occurrence
            sents = [s for i, (s, k) in enumerate(zip(sents, keys, strict=True)) if first[k] == i]
        return sents, True, dup

    def label_word_density(self, completion: str) -> float:
        """Share of the think block's words that are label words (0 when there is no word)."""
        words = _WORD.findall((extract_think(completion) or "").lower())
        return sum(w in self._label_words for w in words) / len(words) if words else 0.0

    def sentence_probs(self, sentences: list[str]) -> torch.Tensor:
        """The verifier's probabilities, float [S, C] on CPU, checked: the right shape and finite.

        Raises `VerifierOutputError` on any non-finite value: NaN would read every sentence as one label (a
        constant reward or metric), so it must stop the run, not be scored.
        """
        probs = self.verifier.probs(sentences)  # [S, C]
        expected = (len(sentences), len(self.verifier_labels))
        if tuple(probs.shape) != expected:
            raise ValueError(f"verifier.probs returned shape {tuple(probs.shape)}, expected {expected}")
        probs = probs.detach().float().cpu()
        bad = (~torch.isfinite(probs)).any(dim=-1).nonzero().flatten().tolist()  # sentence indices
        if bad:
            raise VerifierOutputError(
                f"the verifier returned non-finite probabilities for {len(bad)} of {len(sentences)} sentences "
                f"(e.g. {sentences[bad[0]]!r}); stopped: they must not become rewards or metrics "
                "(NaN/inf verifier weights?)"
            )
        return probs

    def score(self, completions: Sequence[str], labels: Sequence[str]) -> list[ExplanationScore]:
        """Scores and statistics per completion (one verifier call for the whole batch, none if no sentence)."""
        _check_lengths(completions, labels)
        completions = completion_texts(completions)
        b = len(completions)
        truth_names = [self.label_set.canonical(lbl, where="ground-truth label") for lbl in labels]
        truth = torch.tensor([self.mapping[t] for t in truth_names], dtype=torch.long)  # [B]
        truth_is_neutral = torch.tensor(
            [self.neutral_idx is not None and int(t) == self.neutral_idx for t in truth], dtype=torch.bool
        )  # [B]
        per = [self.sentences(c) for c in completions]
        cap = self.max_sentences
        capped = [cap is not None and len(sents) > cap for sents, _, _ in per]
        per = [(sents[:cap], think, dup) for sents, think, dup in per]
        flat = [s for sents, _, _ in per for s in sents]
        owner = torch.tensor([i for i, (sents, _, _) in enumerate(per) for _ in sents], dtype=torch.long)  # [S]
        if flat:
            sets = decide(self.sentence_probs(flat), self.threshold, self.max_labels)  # [S, C]
            n, n_nn, m = sentence_counts(sets, owner, truth, self.neutral_idx, b)
        else:
            n = n_nn = m = torch.zeros(b, dtype=torch.long)
        base = explanation_ratio(n, n_nn, m, truth_is_neutral).tolist()
        scores = []
        for i, completion in enumerate(completions):
            _, has_think, dup = per[i]
            density = self.label_word_density(completion)
            gaming = dup + max(0.0, density - self.label_word_allowance)
            reward = max(0.0, base[i] - self.penalty * gaming) if self.penalty > 0 else base[i]
            scores.append(
                ExplanationScore(
                    reward=float(reward),
                    base_reward=float(base[i]),
                    n_sentences=int(n[i]),
                    n_non_neutral=int(n_nn[i]),
                    n_match=int(m[i]),
                    duplicate_fraction=float(dup),
                    label_word_density=float(density),
                    has_think=has_think,
                    capped=capped[i],
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
