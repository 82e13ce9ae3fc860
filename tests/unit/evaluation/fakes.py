"""Shared test helpers: a keyword verifier and predictions-file rows."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ecr.labels import DFEW_LABELS


class KeywordVerifier:
    """A `Verifier` whose sentence probabilities come from label words: 0.9 for each word present, else neutral."""

    def __init__(self, names: tuple[str, ...] = (*DFEW_LABELS,)) -> None:
        self.label_names = list(names)
        self.threshold = 0.5
        self.calls = 0

    def probs(self, sentences: list[str]) -> torch.Tensor:
        self.calls += 1
        out = torch.full((len(sentences), len(self.label_names)), 0.05)
        for i, s in enumerate(sentences):
            hits = [j for j, n in enumerate(self.label_names) if n in s.lower()]
            for j in hits or [self.label_names.index("neutral")]:
                out[i, j] = 0.9
        return out


def completion(think: str | None, answer: str | None) -> str:
    parts = []
    if think is not None:
        parts.append(f"<think>{think}</think>")
    if answer is not None:
        parts.append(f"<answer>{answer}</answer>")
    return "\n".join(parts)


def write_predictions(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
