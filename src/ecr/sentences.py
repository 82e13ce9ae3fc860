"""Sentence splitters for explanations: the official regex (exact reproduction) and pysbd (better).

The explanation reward scores every sentence of a `<think>` block, so how text is split changes the reward.
- "official": split on whitespace that follows `.`, `!` or `?`, unless an odd number of double quotes follows
  (i.e. inside a quotation); empty pieces dropped. It splits after abbreviations ("Mr. Smith" -> 2 pieces),
  exactly like the paper's code.
- "pysbd": the rule-based pysbd segmenter (offline, handles "Mr.", "p.m.", decimals and ellipses).
Both return stripped, non-empty sentences; an empty or blank text gives [].
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Literal, Protocol

from ecr.errors import ConfigError
from ecr.extras import require

Splitter = Callable[[str], list[str]]
SplitterName = Literal["official", "pysbd"]

_OFFICIAL = re.compile(r'(?<=[\.!?])\s+(?=(?:[^"]*"[^"]*")*[^"]*$)')


def split_official(text: str) -> list[str]:
    """The paper's regex splitter (see module docstring)."""
    return [s.strip() for s in _OFFICIAL.split(text) if s.strip()]


class Segmenter(Protocol):
    """What the splitter uses of `pysbd.Segmenter` (pysbd ships no type hints)."""

    def segment(self, text: str) -> list[str]: ...


@lru_cache(maxsize=1)
def _segmenter() -> Segmenter:
    pysbd = require("pysbd", "the pysbd sentence splitter (splitter: pysbd)")
    return pysbd.Segmenter(language="en", clean=False)


def split_pysbd(text: str) -> list[str]:
    """pysbd sentence boundaries (abbreviation-aware)."""
    if not text.strip():
        return []
    return [s.strip() for s in _segmenter().segment(text) if s.strip()]


def normalize_sentence(text: str) -> str:
    """Lower-case, collapse whitespace, drop final punctuation: the key of a sentence in a lookup table (the
    synthetic generator's cue table and the judge that reads it)."""
    return " ".join(text.lower().split()).rstrip(".!?").strip()


SPLITTERS: dict[str, Splitter] = {"official": split_official, "pysbd": split_pysbd}


def get_splitter(spec: str | Splitter) -> Splitter:
    """A splitter by name ("official" | "pysbd") or a callable passed through."""
    if callable(spec):
        return spec
    if spec not in SPLITTERS:
        raise ConfigError(f"unknown sentence splitter {spec!r}; choose one of {sorted(SPLITTERS)}")
    return SPLITTERS[spec]
