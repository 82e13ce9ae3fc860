"""What a teacher (pseudo-labeller) is: text in, up to two labels out, or an explicit "missing".

The ERV is distilled from a teacher's labels. A teacher that fails on an item (API error, unparseable or
off-list reply) returns `Missing(reason)`; it is counted and excluded, never turned into a label — the paper's
evaluation code mapped such failures to "neutral", which silently biases the data.

`map_into_space` puts an emotion word from another vocabulary (a lexicon emotion, a GoEmotions class, an LLM's
reply) into the configured label space: the space's own synonyms first, then the paper's task<->GoEmotions
table in either direction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ecr.labels import (
    GOEMOTIONS_MAPPING,
    SYNONYM_GROUPS,
    LabelSet,
    clean_text,
)

_INVERSE_GOEMOTIONS = {v: k for k, v in GOEMOTIONS_MAPPING.items()}  # goemotions class -> task concept


@dataclass(frozen=True)
class TeacherLabel:
    """A teacher's answer: 1..max labels of the label space, most confident first, and optional probabilities
    (label -> p) that training uses as soft targets."""

    labels: tuple[str, ...]
    probs: dict[str, float] | None = None


@dataclass(frozen=True)
class Missing:
    """No answer for this item; `reason` is a short tag used in counts ("retries_exhausted", "off_list", ...)."""

    reason: str
    detail: str = ""


TeacherResult = TeacherLabel | Missing


@runtime_checkable
class Teacher(Protocol):
    """A pseudo-labeller over a fixed label space."""

    name: str
    label_names: tuple[str, ...]

    def label(self, texts: Sequence[str]) -> list[TeacherResult]:
        """One result per text, in order."""
        ...

    def settings(self) -> dict[str, Any]:
        """What identifies this teacher's answers (cache keys, provenance); never a secret."""
        ...


@runtime_checkable
class Paraphraser(Protocol):
    """A teacher that can also rewrite a text (the LLM teacher): `balance='paraphrase'` asks it for new rows."""

    def paraphrase(self, text: str, n: int) -> list[str] | Missing:
        """`n` paraphrases of `text`, or why there are none."""
        ...


def map_into_space(word: str, space: LabelSet) -> str | None:
    """The label of `space` that `word` names, or None (see module docstring for the lookup order)."""
    w = clean_text(word)
    hit = space.normalize(w)
    if hit is not None:
        return hit
    group = next((g for g in SYNONYM_GROUPS if w in g), frozenset({w}))
    for member in sorted(group):
        target = GOEMOTIONS_MAPPING.get(member)
        if target is not None and target in space.labels:
            return target
    concept = _INVERSE_GOEMOTIONS.get(w)
    return space.normalize(concept) if concept is not None else None
