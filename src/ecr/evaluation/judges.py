"""Judges of the explanation label ê: the emotion a think text expresses (docs/method.md §5).

A judge answers one label of the task's label set per prediction, or `Missing(reason)`. A missing answer is
excluded from EPC/EEA/FCR and counted per reason; it is never turned into a label.

- `VerifierJudge` (offline default): the ERV's label set of each think sentence under its own τ, aggregated by
  `ecr.metrics.explanation_label` (most votes among non-neutral sentences, ties by summed probability; neutral
  iff every sentence is neutral; no think = MISSING).
- `StoredVerifierJudge`: the same rule on the `sentences` that `ecr predict` stored with a verifier (no model
  is loaded; the mapping saved in each row's `verifier` is used).
- `CueJudge` (synthetic data only): the generator's own sentence table (`cue_table.json`, written by `ecr data
  synth` beside its manifest) — independent of the verifier the reward uses. Each think sentence (official
  splitter, `ecr.sentences.normalize_sentence`) is looked up: a cue sentence votes for its emotion, a filler casts
  no vote. A sentence not in the table is "near-matched" when the table sentences most similar to it (word-set
  Jaccard >= 0.6) all carry one emotion (a tiny decoder recombines template halves: "The speech is low and falls
  slowly, sounding sad."), else counted as unmatched (no vote); both counts are reported. ê = the emotion with
  the most votes, ties broken by the emotion of the LAST voting sentence (every generated explanation ends with
  its conclusion); no think block -> MISSING ("no_think"); no cue sentence -> MISSING ("no_cue_sentence").
- `LLMJudge`: the paper's judge prompt (`JUDGE_PROMPT`) on any chat-completions server, through the teacher's
  client (`ecr.teachers.openai_chat.OpenAITeacher`): the key read from the environment variable named by
  `api_key_env`, bounded concurrency, retries with backoff, every reply appended to an `AnswerCache` before it
  is used, so an interrupted run resumes without paying twice. A reply is the judged label only when the whole
  reply normalises to a label of the set (`LabelSet.normalize`: case, surrounding punctuation and synonyms are
  tolerated, `"Happy."` is happy); anything else is MISSING ("off_list"), as is a failed call. A prediction
  without a think block is MISSING ("no_think") and costs no call (the official code sent an empty reason).
  The request is the paper's prompt alone, verbatim, as the user message (no system message).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from ecr.errors import ConfigError
from ecr.evaluation.predictions import Prediction
from ecr.labels import NEUTRAL, LabelSet
from ecr.metrics.explanation import explanation_label
from ecr.models.sentence_reader import SentenceReader
from ecr.models.verifier import Verifier
from ecr.sentences import normalize_sentence, split_official
from ecr.teachers.base import Missing
from ecr.teachers.openai_chat import OpenAIConfig, OpenAITeacher

JudgeResult = str | Missing
_WORD = re.compile(r"[a-z']+")

JUDGE_PROMPT = (
    "Read the reasoning content and respond with the appropriate emotion in {labels}. Reply with only the emotion "
    "word.\nReason: {reason}\nAnswer Emotion:"
)
JUDGE_PROMPT_VERSION = hashlib.sha256(JUDGE_PROMPT.encode()).hexdigest()[:12]


@runtime_checkable
class Judge(Protocol):
    """Reads the think text of each prediction and names one label of the set, or says why it cannot."""

    name: str

    def judge(self, predictions: Sequence[Prediction]) -> list[JudgeResult]:
        """One result per prediction, in order."""
        ...

    def settings(self) -> dict[str, Any]:
        """What identifies this judge's answers (written to metrics.json); never a secret."""
        ...


def think_completion(think: str | None) -> str:
    """A think text as the completion the sentence reader reads ("" without a think block)."""
    return f"<think>{think}</think>" if think is not None else ""


class VerifierJudge:
    """ê from the verifier's per-sentence label sets (rule: `ecr.metrics.explanation`), one batched call."""

    name = "verifier"

    def __init__(
        self,
        verifier: Verifier | str | os.PathLike[str],
        label_set: LabelSet,
        *,
        threshold: float | None = None,
        splitter: str = "official",
    ) -> None:
        from ecr.models.verifier import load_verifier

        self.path = None if isinstance(verifier, Verifier) else os.fspath(verifier)
        model = verifier if isinstance(verifier, Verifier) else load_verifier(verifier)
        self.label_set = label_set
        self.reader = SentenceReader(model, label_set, threshold=threshold, splitter=splitter)
        self.mapping = self.reader.class_mapping()
        self.splitter = splitter

    def judge(self, predictions: Sequence[Prediction]) -> list[JudgeResult]:
        per = self.reader.sentence_labels([think_completion(p.think) for p in predictions])
        return [explanation_label(s, self.mapping, self.label_set.labels) for s in per]

    def settings(self) -> dict[str, Any]:
        return {
            "judge": self.name,
            "verifier": self.path,
            "threshold": self.reader.threshold,
            "max_labels": self.reader.max_labels,
            "splitter": self.splitter,
            "mapping": self.mapping,
        }


class StoredVerifierJudge:
    """The verifier rule on the sentence label sets stored in the predictions file by `ecr predict`."""

    name = "verifier"

    def __init__(self, label_set: LabelSet) -> None:
        self.label_set = label_set
        self._seen: dict[str, Any] = {}

    def judge(self, predictions: Sequence[Prediction]) -> list[JudgeResult]:
        out: list[JudgeResult] = []
        for p in predictions:
            mapping = (p.verifier or {}).get("mapping")
            if not isinstance(mapping, dict) or (p.think is not None and p.sentences is None):
                raise ConfigError(
                    f"prediction {p.id!r} (line {p.line}) has no stored verifier sentence labels: predict with a "
                    "verifier configured, or score with --verifier DIR"
                )
            self._seen.setdefault("verifier", (p.verifier or {}).get("path"))
            self._seen.setdefault("threshold", (p.verifier or {}).get("threshold"))
            self._seen.setdefault("mapping", mapping)
            out.append(explanation_label(p.sentences if p.think is not None else None, mapping, self.label_set.labels))
        return out

    def settings(self) -> dict[str, Any]:
        return {"judge": self.name, "source": "sentences stored in the predictions file", **self._seen}


class CueJudge:
    """ê from the synthetic generator's sentence table (rule in the module docstring); counts what it could not read."""

    name = "cue"

    def __init__(self, table: str | os.PathLike[str], label_set: LabelSet, *, near: float | None = 0.6) -> None:
        if near is not None and not 0.0 < near <= 1.0:
            raise ConfigError(f"cue judge: near must be in (0, 1] or None, got {near}")
        self.near = near
        self.path = os.fspath(table)
        try:
            data = json.loads(Path(table).read_text(encoding="utf-8"))
            sentences = data["sentences"]
        except FileNotFoundError:
            raise ConfigError(
                f"{self.path}: no cue table (`ecr data synth` writes cue_table.json beside its manifest)"
            ) from None
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{self.path}: not a cue table ({{labels, sentences}} JSON): {exc}") from None
        unknown = sorted({e for e in sentences.values() if e is not None} - set(label_set.labels))
        if unknown:
            raise ConfigError(f"{self.path}: emotions {unknown} are not labels of {label_set.name!r}")
        self.table: dict[str, str | None] = dict(sentences)
        self._words = {key: set(_WORD.findall(key)) for key in self.table}
        self.label_set = label_set
        self.counts: Counter[str] = Counter()
        self.unmatched: list[str] = []

    def lookup(self, sentence: str) -> tuple[str | None, str]:
        """(emotion or None for a filler, how: "exact" | "near" | "unmatched") of one sentence.

        near: no exact entry, but the table sentences with the highest word-set Jaccard similarity (>= `near`) all
        express the same emotion (or are all fillers) — a decoder's recombination such as "The speech is low and
        falls slowly, sounding sad." for "The voice is ...".
        """
        key = normalize_sentence(sentence)
        if key in self.table:
            return self.table[key], "exact"
        if self.near is None:
            return None, "unmatched"
        words = set(_WORD.findall(key))
        best, emotions = 0.0, set()
        for other, other_words in self._words.items():
            union = len(words | other_words)
            sim = len(words & other_words) / union if union else 0.0
            if sim > best:
                best, emotions = sim, {self.table[other]}
            elif sim == best:
                emotions.add(self.table[other])
        if best >= self.near and len(emotions) == 1:
            return next(iter(emotions)), "near"
        return None, "unmatched"

    def read(self, think: str | None) -> list[tuple[str, str | None, str]]:
        """Per sentence of a think text: (sentence, its emotion or None, how it was matched: `lookup`)."""
        return [(sentence, *self.lookup(sentence)) for sentence in split_official(think or "")]

    def judge_one(self, think: str | None) -> JudgeResult:
        if think is None:
            return Missing("no_think")
        votes: Counter[str] = Counter()
        last: dict[str, int] = {}
        for i, (sentence, emotion, how) in enumerate(self.read(think)):
            self.counts["sentences"] += 1
            self.counts[how] += 1
            if how == "unmatched":
                if len(self.unmatched) < 10 and sentence not in self.unmatched:  # the first 10 distinct ones
                    self.unmatched.append(sentence)
            elif emotion is None:
                self.counts["fillers"] += 1
            else:
                votes[emotion] += 1
                last[emotion] = i
        if not votes:
            return Missing("no_cue_sentence")
        return max(votes, key=lambda e: (votes[e], last[e]))

    def judge(self, predictions: Sequence[Prediction]) -> list[JudgeResult]:
        return [self.judge_one(p.think) for p in predictions]

    def settings(self) -> dict[str, Any]:
        return {
            "judge": self.name,
            "cue_table": self.path,
            "sentences": self.counts["sentences"],
            "near": self.near,
            "near_matched_sentences": self.counts["near"],
            "unmatched_sentences": self.counts["unmatched"],
            "filler_sentences": self.counts["fillers"],
            "unmatched_examples": list(self.unmatched),
        }


def verifier_sentence_sets(
    judge: VerifierJudge | StoredVerifierJudge, predictions: Sequence[Prediction]
) -> tuple[list[list[Any] | None], dict[str, str]]:
    """Per prediction, the verifier's sentence label sets (None without a think), and the task -> verifier mapping."""
    if isinstance(judge, VerifierJudge):
        return judge.reader.sentence_labels([think_completion(p.think) for p in predictions]), judge.mapping
    mapping = next(((p.verifier or {}).get("mapping") for p in predictions if p.verifier), None) or {}
    return [p.sentences if p.think is not None else None for p in predictions], dict(mapping)


def verifier_vs_cue(
    cue: CueJudge, sentence_sets: Sequence[Sequence[Any] | None], mapping: dict[str, str], neutral: str = NEUTRAL
) -> dict[str, Any]:
    """The verifier's per-sentence labels scored against the generator's table, in the verifier's classes.

    Over every sentence the table knows (each occurrence counts): truth = the verifier class of its emotion (a
    filler's truth is `neutral`); prediction = the verifier's label set for it (multi-label). Per class: precision,
    recall, F1 and support (torchmetrics' multilabel scores); `macro_f1` over the classes with support.
    """
    from torchmetrics.functional.classification import multilabel_precision, multilabel_recall

    classes = sorted({*mapping.values(), neutral})
    index = {c: i for i, c in enumerate(classes)}
    truth_rows, pred_rows = [], []
    for sets in sentence_sets:
        for sentence in sets or ():
            key = normalize_sentence(sentence["text"])
            if key not in cue.table:
                continue
            emotion = cue.table[key]
            truth = neutral if emotion is None else mapping.get(emotion)
            if truth is None:
                continue
            t, q = [0] * len(classes), [0] * len(classes)
            t[index[truth]] = 1
            for cls in sentence["labels"]:
                if cls in index:
                    q[index[cls]] = 1
            truth_rows.append(t)
            pred_rows.append(q)
    if not truth_rows:
        return {"sentences": 0, "per_class": {}, "macro_f1": None}
    target, preds = torch.tensor(truth_rows), torch.tensor(pred_rows)  # [S, C] each
    kw: dict[str, Any] = {"num_labels": len(classes), "average": None, "zero_division": 0}
    precision, recall = multilabel_precision(preds, target, **kw), multilabel_recall(preds, target, **kw)  # [C]
    support = target.sum(0)  # [C]
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12), 0.0)
    per_class = {
        c: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, c in enumerate(classes)
        if support[i] > 0 or preds[:, i].any()
    }
    supported = [v["f1"] for v in per_class.values() if v["support"] > 0]
    return {"sentences": len(truth_rows), "per_class": per_class, "macro_f1": sum(supported) / len(supported)}


class LLMJudge(OpenAITeacher):
    """The paper's LLM judge on a chat-completions server (see the module docstring); reuses the teacher's client."""

    name = "openai"

    system_prompt = None  # the paper's judge: its prompt alone, as the user message

    def __init__(
        self,
        label_set: LabelSet,
        *,
        config: OpenAIConfig | None = None,
        cache_path: str | os.PathLike[str],
        client: Any = None,
    ) -> None:
        config = config or OpenAIConfig(model="gpt-4.1-mini", max_tokens=16)
        super().__init__(list(label_set.labels), config=config, cache_path=cache_path, max_labels=1, client=client)
        self.label_set = label_set
        self.label_names = tuple(label_set.labels)  # exactly the task's labels, in id order (no neutral added)

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "teacher": "openai_judge",
            "judge_prompt_version": JUDGE_PROMPT_VERSION,
            "system_prompt": self.system_prompt,
        }

    def judge_one(self, think: str | None) -> JudgeResult:
        if think is None or not think.strip():
            result: JudgeResult = Missing("no_think")
        else:
            prompt = JUDGE_PROMPT.format(labels=", ".join(self.label_names), reason=think)
            reply = self._cached_reply("judge", think, prompt, self.config.max_tokens)
            if isinstance(reply, Missing):
                result = reply
            else:
                label = self.label_set.normalize(reply)
                result = label if label is not None else Missing("off_list", reply[:100])
        if isinstance(result, Missing):
            self._count(f"missing:{result.reason}")
        return result

    def judge(self, predictions: Sequence[Prediction]) -> list[JudgeResult]:
        """At most `concurrency` requests in flight; results in input order; cached answers cost nothing."""
        thinks = [p.think for p in predictions]
        if any(t is not None and t.strip() for t in thinks):
            self._get_client()  # a missing key fails here, once, before any request
        with ThreadPoolExecutor(max_workers=max(1, self.config.concurrency)) as pool:
            return list(pool.map(self.judge_one, thinks))

    def usage(self) -> dict[str, int]:
        """Requests, retries and cache hits of this run."""
        return {k: v for k, v in Counter(self.counts).items() if not k.startswith("missing:")}


__all__ = [
    "JUDGE_PROMPT",
    "CueJudge",
    "Judge",
    "JudgeResult",
    "LLMJudge",
    "StoredVerifierJudge",
    "VerifierJudge",
    "think_completion",
    "verifier_sentence_sets",
    "verifier_vs_cue",
]
