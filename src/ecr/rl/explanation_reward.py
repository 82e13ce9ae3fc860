"""The explanation (ERV) reward of GRPO: docs/method.md §3, re-derived from the paper's code.

The reward of a completion is the share of its think block's sentences whose verifier label set contains the
ground truth, over non-neutral sentences (over all sentences when the truth is neutral). The sentences are read
by the one `ecr.models.sentence_reader.SentenceReader` (splitter, mapping checked at construction — a
`LabelError` before training, not a KeyError mid-step —, τ, decision rule, the 64-sentence cap, the non-finite
check), all of a batch in ONE verifier call, none when there is no sentence.

Anti-gaming: `ExplanationReward.evaluate` returns per-completion `duplicate_fraction` and `label_word_density`
(`ExplanationScore`) beside the rewards; `dedupe_sentences` and `penalty` act on them (see `ExplanationReward`).

Why a module of its own: this term is the one that reads explanations through the verifier (counts, ratio,
gaming statistics); the format and accuracy terms and their combination (`ecr.rl.rewards`, which re-exports
everything here) only parse tags.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Unpack

import torch

from ecr.errors import ConfigError
from ecr.labels import SYNONYM_GROUPS, LabelSet, clean_text
from ecr.models.sentence_reader import LabelSpec, MappingSpec, ReaderOptions, SentenceReader
from ecr.models.verifier import DEFAULT_MAX_LABELS, DEFAULT_THRESHOLD, Verifier
from ecr.prompts import extract_think
from ecr.rl.reward_types import TermResult, check_lengths, completion_texts
from ecr.sentences import Splitter

_WORD = re.compile(r"[a-z]+")


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


class ExplanationOptions(ReaderOptions, total=False):
    """`ExplanationReward`'s keyword settings beside the verifier and the label set (for a builder that passes
    them through, e.g. `ecr.rl.rewards.default_rewards`)."""

    penalty: float
    label_word_allowance: float


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
        check_lengths(completions, labels)
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
    check_lengths(completions, labels)
    if not completions:
        return []
    ls = label_set if label_set is not None else LabelSet("batch", tuple(sorted({clean_text(x) for x in labels})))
    reward = ExplanationReward(
        verifier, ls, mapping=mapping, threshold=threshold, max_labels=max_labels, splitter=splitter
    )
    return reward(completions, labels)


__all__ = [
    "ExplanationReward",
    "ExplanationScore",
    "explanation_ratio",
    "explanation_reward",
    "sentence_counts",
]
