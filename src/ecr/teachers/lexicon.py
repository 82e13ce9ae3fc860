"""Offline teacher: the NRC emotion lexicon shipped inside the `nrclex` wheel.

It is the default teacher of the embedded (offline) pipeline: no API, no download. It reads `nrc_en.json`
through importlib.resources (nrclex's own `load_raw_text` needs downloaded NLTK corpora) and tokenises itself.

Scoring of one text:
- each word found in the lexicon adds 1 to each of its emotions that `emotion_map` sends into the label space
  (default: anger, fear, sadness, disgust, surprise, joy->happiness; trust and anticipation are ignored because
  no task label expresses them); a word not found is retried without a plural/verb/adverb suffix
  (-s, -es, -ed, -d, -ing, -ly);
- a word that itself names a label of the space (e.g. "angry", "nervous" -> anxiety) adds `direct_weight` to
  that label instead, so task-specific labels without a lexicon emotion can be produced;
- words in `ignore_words` (default `DESCRIPTIVE_WORDS`: NRC tags them, but in descriptions of faces and
  voices they express no emotion, e.g. "mouth" -> surprise) are skipped;
- negation: a word within `negation_window` words after a negator ("not", "no", "never", "without", "hardly",
  any "...n't") is skipped ("not happy" adds nothing). This is cheap and imperfect ("not only happy ...").
Labels: the best-scoring label, plus the second when it scores at least `second_ratio` of the best; neutral
when nothing fires. Answers are hard labels (no probabilities).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

from ecr.errors import ConfigError
from ecr.extras import require
from ecr.labels import NEUTRAL, LabelSet, resolve_label_space
from ecr.teachers.base import TeacherLabel, TeacherResult, map_into_space

NRC_DEFAULT_MAP: dict[str, str | None] = {
    "anger": "anger",
    "fear": "fear",
    "sadness": "sadness",
    "disgust": "disgust",
    "surprise": "surprise",
    "joy": "happiness",
    "trust": None,
    "anticipation": None,
}
# Words the NRC lexicon tags with emotions that, in descriptions of faces and voices, express none
# ("the mouth", "a steady pitch", "the feeling is ...", "his words").
DESCRIPTIVE_WORDS = frozenset({"mouth", "steady", "feeling", "words"})
NEGATORS = frozenset({"not", "no", "never", "without", "hardly", "nor", "cannot", "neither", "barely"})
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?")
_SUFFIXES = ("ing", "es", "ed", "ly", "s", "d")


@lru_cache(maxsize=1)
def load_nrc() -> dict[str, tuple[str, ...]]:
    """word -> NRC categories, from the file packaged in `nrclex` (6,468 words)."""
    package = require("nrclex", "the lexicon teacher (the NRC lexicon in nrclex)")
    text = resources.files(package).joinpath("data/nrc_en.json").read_text(encoding="utf-8")
    return {w: tuple(cats) for w, cats in json.loads(text).items()}


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens (apostrophes kept inside words, so "isn't" is one token)."""
    return _TOKEN.findall(text.lower())


class LexiconTeacher:
    """NRC-lexicon pseudo-labeller over a label space (see module docstring for the rules)."""

    name = "lexicon"

    def __init__(
        self,
        labels: str | Sequence[str] = "dfew",
        *,
        emotion_map: Mapping[str, str | None] | None = None,
        direct_weight: float = 2.0,
        second_ratio: float = 0.5,
        max_labels: int = 2,
        negation_window: int = 3,
        ignore_words: Sequence[str] = tuple(sorted(DESCRIPTIVE_WORDS)),
    ) -> None:
        self.label_names = resolve_label_space(labels)  # always holds neutral (task sets gain it)
        self.space = LabelSet("space", self.label_names)
        self.emotion_to_label = self._resolve_map(dict(emotion_map or {}))
        self.direct_weight = direct_weight
        self.second_ratio = second_ratio
        self.max_labels = max_labels
        self.negation_window = negation_window
        self.ignore_words = frozenset(w.lower() for w in ignore_words)
        self.lexicon = {w: c for w, c in load_nrc().items() if w not in self.ignore_words}

    def _resolve_map(self, given: Mapping[str, str | None]) -> dict[str, str]:
        """NRC emotion -> label. Defaults the space cannot express are dropped; explicit entries must map."""
        out = {}
        for emotion, concept in {**NRC_DEFAULT_MAP, **given}.items():
            target = map_into_space(concept, self.space) if concept is not None else None
            if target is None and concept is not None and emotion in given:
                raise ConfigError(f"lexicon emotion_map: {emotion!r}->{concept!r} is not in {self.label_names}")
            if target is not None:
                out[emotion] = target
        return out

    def unreachable_labels(self) -> list[str]:
        """Labels (not neutral) that no lexicon emotion maps onto: only the label's own word can produce them."""
        targets = set(self.emotion_to_label.values())
        return [lbl for lbl in self.label_names if lbl != NEUTRAL and lbl not in targets]

    def settings(self) -> dict[str, Any]:
        return {
            "teacher": self.name,
            "labels": list(self.label_names),
            "map": self.emotion_to_label,
            "direct_weight": self.direct_weight,
            "second_ratio": self.second_ratio,
            "negation_window": self.negation_window,
            "ignore_words": sorted(self.ignore_words),
        }

    def _lookup(self, word: str) -> tuple[str, ...]:
        if word in self.lexicon:
            return self.lexicon[word]
        for suffix in _SUFFIXES:
            if word.endswith(suffix) and len(word) - len(suffix) >= 3 and word[: -len(suffix)] in self.lexicon:
                return self.lexicon[word[: -len(suffix)]]
        return ()

    def scores(self, text: str) -> dict[str, float]:
        """label -> score of one text (empty when no emotion word fires)."""
        scores: dict[str, float] = {}
        last_negator = -(10**9)
        for i, tok in enumerate(tokenize(text)):
            if tok in NEGATORS or tok.endswith("n't"):
                last_negator = i
                continue
            if i - last_negator <= self.negation_window:
                continue
            direct = map_into_space(tok, self.space)
            if direct is not None and direct != NEUTRAL:
                scores[direct] = scores.get(direct, 0.0) + self.direct_weight
                continue
            for emotion in self._lookup(tok):
                target = self.emotion_to_label.get(emotion)
                if target is not None:
                    scores[target] = scores.get(target, 0.0) + 1.0
        return scores

    def label_one(self, text: str) -> TeacherLabel:
        scores = self.scores(text)
        if not scores:
            return TeacherLabel((NEUTRAL,))
        ranked = sorted(scores, key=lambda lbl: (-scores[lbl], self.label_names.index(lbl)))
        best = scores[ranked[0]]
        keep = [ranked[0]] + [lbl for lbl in ranked[1:] if scores[lbl] >= self.second_ratio * best]
        return TeacherLabel(tuple(keep[: self.max_labels]))

    def label(self, texts: Sequence[str]) -> list[TeacherResult]:
        return [self.label_one(t) for t in texts]
