"""The one verifier reader: how a completion's explanation becomes per-sentence verifier label sets.

The explanation reward (`ecr.rl.rewards.ExplanationReward`), the verifier judge and its metrics
(`ecr.metrics.explanation`, `ecr.evaluation.judges`), best-of-N reranking, `ecr predict`'s stored sentence labels
and the notebook helpers (`ecr.explore`) all read explanations through a `SentenceReader`, so they cannot read
the same completion differently. It owns, once:

- the splitter (`ecr.sentences`, "official" by default) applied to the think block (`ecr.prompts.extract_think`);
- optional de-duplication of repeated sentences (lower-cased, whitespace-collapsed);
- the sentence cap: at most `max_sentences` (64 by default, None = all) sentences are read per completion, the
  first ones, so a degenerate 10,000-sentence completion costs what 64 do and every reader sees the same 64;
- the label mapping, task label -> verifier class ("auto": the verifier's saved mapping, else
  `ecr.labels.default_verifier_mapping`), checked before any sentence is read (a `LabelError`);
- τ (the verifier's saved threshold unless overridden) and the decision rule (`ecr.models.verifier.decide`);
- the check of the verifier's output: right shape and finite (`VerifierOutputError` otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict

import torch

from ecr.errors import ConfigError, VerifierOutputError
from ecr.labels import NEUTRAL, LabelSet, clean_text, default_verifier_mapping, get_label_set, resolve_verifier_mapping
from ecr.models.verifier import DEFAULT_MAX_LABELS, DEFAULT_THRESHOLD, Verifier, decide
from ecr.prompts import extract_think
from ecr.sentences import Splitter, get_splitter

LabelSpec = LabelSet | str | Sequence[str]
MappingSpec = Mapping[str, str] | Literal["auto", "identity"] | None
DEFAULT_MAX_SENTENCES = 64


class SentenceLabels(TypedDict):
    """One sentence of a think text and the verifier's label set for it, each label with its probability."""

    text: str
    labels: dict[str, float]


@dataclass(frozen=True)
class ThinkSentences:
    """The sentences of one completion that are read (after de-duplication and the cap) and what was dropped."""

    sentences: list[str]
    has_think: bool
    duplicate_fraction: float  # 1 - distinct/total over ALL the think block's sentences (0 without any)
    capped: bool  # more than `max_sentences` sentences: only the first ones are read


@dataclass(frozen=True)
class Reading:
    """A batch of completions read by the verifier in one call.

    per: one `ThinkSentences` per completion; probs float [S, C] (CPU, finite) and sets bool [S, C] (`decide`)
    over the S read sentences of all completions in order; owner long [S]: completion index of each sentence.
    """

    per: list[ThinkSentences]
    probs: torch.Tensor
    sets: torch.Tensor
    owner: torch.Tensor


class ReaderOptions(TypedDict, total=False):
    """`SentenceReader`'s keyword settings (documented and defaulted there), for a class that builds one."""

    mapping: MappingSpec
    threshold: float | None
    max_labels: int
    splitter: str | Splitter
    dedupe_sentences: bool
    max_sentences: int | None


class HasReader(Protocol):
    """Anything that reads through a `SentenceReader` (e.g. `ExplanationReward`)."""

    reader: SentenceReader


class SentenceReader:
    """Splits, caps and maps explanations and reads them with a verifier under one τ and decision rule.

    Args:
        verifier: any `Verifier` (`label_names` + `probs`).
        label_set: the task's label set (name, list or LabelSet).
        mapping: task label -> verifier class name. "auto" (default): the verifier's own saved `mapping` if it
            has one, else `default_verifier_mapping` (GoEmotions table for the 28 GoEmotions classes, else
            identity); "identity"/None: same-named classes; a dict: explicit (missing keys fall back to same name).
        threshold: τ. None: the verifier's saved `threshold` attribute, else 0.1 (the paper's value).
        max_labels: at most this many labels per sentence (top by p).
        splitter: "official" (paper regex), "pysbd", or a callable text -> sentences.
        dedupe_sentences: a sentence repeated within one completion is read once.
        max_sentences: sentences read per completion (the first ones, after de-duplication); None: no cap.

    Raises:
        LabelError: a task label has no class in the verifier's label space.
        ConfigError: max_labels or max_sentences below 1.
    """

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
        max_sentences: int | None = DEFAULT_MAX_SENTENCES,
    ) -> None:
        if max_sentences is not None and max_sentences < 1:
            raise ConfigError(f"max_sentences must be >= 1 or None, got {max_sentences}")
        if max_labels < 1:
            raise ConfigError(f"max_labels must be >= 1, got {max_labels}")
        self.verifier = verifier
        self.label_set = get_label_set(label_set)
        self.verifier_labels = [clean_text(n) for n in verifier.label_names]
        if mapping == "auto":
            mapping = getattr(verifier, "mapping", None) or default_verifier_mapping(self.verifier_labels)
        chosen = None if mapping == "identity" else mapping
        self.mapping = resolve_verifier_mapping(self.label_set, self.verifier_labels, chosen)  # raises LabelError
        tau = threshold if threshold is not None else getattr(verifier, "threshold", DEFAULT_THRESHOLD)
        self.threshold = float(tau)
        self.max_labels = max_labels
        self.splitter = get_splitter(splitter)
        self.dedupe_sentences = dedupe_sentences
        self.max_sentences = max_sentences
        self.neutral_idx = self.verifier_labels.index(NEUTRAL) if NEUTRAL in self.verifier_labels else None

    def class_mapping(self) -> dict[str, str]:
        """Task label -> verifier class NAME (what `ecr predict` stores and the judge's rule needs)."""
        return {label: self.verifier_labels[i] for label, i in self.mapping.items()}

    def think_sentences(self, completion: str) -> ThinkSentences:
        """The sentences of one completion's think block that are read (de-duplicated if asked, then capped)."""
        think = extract_think(completion)
        if think is None:
            return ThinkSentences([], False, 0.0, False)
        sents = self.splitter(think)
        keys = [" ".join(s.lower().split()) for s in sents]
        dup = 1.0 - len(set(keys)) / len(keys) if keys else 0.0
        if self.dedupe_sentences:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}  # key -> index of first occurrence
            sents = [s for i, (s, k) in enumerate(zip(sents, keys, strict=True)) if first[k] == i]
        cap = self.max_sentences
        capped = cap is not None and len(sents) > cap
        return ThinkSentences(sents[:cap], True, dup, capped)

    def probs(self, sentences: list[str]) -> torch.Tensor:
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

    def read(self, completions: Sequence[str]) -> Reading:
        """All read sentences of all completions through ONE verifier call (none when there is no sentence)."""
        per = [self.think_sentences(c) for c in completions]
        flat = [s for t in per for s in t.sentences]
        owner = torch.tensor([i for i, t in enumerate(per) for _ in t.sentences], dtype=torch.long)  # [S]
        c = len(self.verifier_labels)
        probs = self.probs(flat) if flat else torch.zeros(0, c)  # [S, C]
        sets = decide(probs, self.threshold, self.max_labels) if flat else torch.zeros(0, c, dtype=torch.bool)
        return Reading(per, probs, sets, owner)

    def sentence_labels(self, completions: Sequence[str], digits: int = 4) -> list[list[SentenceLabels] | None]:
        """The verifier's label set of every read think sentence of each completion (None: no think block)."""
        r = self.read(completions)
        names = self.verifier_labels
        out: list[list[SentenceLabels] | None] = []
        k = 0
        for t in r.per:
            rows: list[SentenceLabels] = []
            for text in t.sentences:
                chosen = r.sets[k].nonzero().flatten().tolist()
                rows.append({"text": text, "labels": {names[j]: round(float(r.probs[k, j]), digits) for j in chosen}})
                k += 1
            out.append(rows if t.has_think else None)
        return out


def reader_of(source: SentenceReader | HasReader) -> SentenceReader:
    """The `SentenceReader` itself, or the one a reward (anything with `.reader`) reads through."""
    return source if isinstance(source, SentenceReader) else source.reader


__all__ = [
    "DEFAULT_MAX_SENTENCES",
    "ReaderOptions",
    "Reading",
    "SentenceLabels",
    "SentenceReader",
    "ThinkSentences",
    "reader_of",
]
