"""Class balancing of labelled sentences: oversampling, or paraphrases asked of the LLM teacher.

Augmented rows are marked `augmented: true` and keep their source's labels and `group`, so they never leak
into validation (`ecr.teachers.label` module docstring).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Literal

import numpy as np

from ecr.errors import ConfigError
from ecr.teachers.base import Missing, Paraphraser, Teacher
from ecr.teachers.label_report import LabelReport

BalanceMode = Literal["none", "oversample", "paraphrase"]


def balance_rows(
    rows: list[dict[str, Any]],
    *,
    mode: BalanceMode,
    ratio: float = 0.5,
    seed: int = 0,
    teacher: Teacher | None = None,
    paraphrases_per_call: int = 3,
    report: LabelReport | None = None,
) -> list[dict[str, Any]]:
    """Raise each class to at least `ratio` x the largest class by oversampling or LLM paraphrases."""
    report = report if report is not None else LabelReport()
    if mode == "none" or not rows:
        return rows
    if not 0.0 < ratio <= 1.0:
        raise ConfigError(f"balance_ratio must be in (0, 1], got {ratio}")
    paraphraser = None  # set exactly in mode "paraphrase"
    if mode == "paraphrase":
        if not isinstance(teacher, Paraphraser):
            raise ConfigError("balance='paraphrase' needs an LLM teacher (teacher=openai); use 'oversample' otherwise")
        paraphraser = teacher
    rng = np.random.default_rng(seed)
    counts = Counter(lbl for r in rows for lbl in r["labels"])
    target = math.ceil(ratio * max(counts.values()))
    out = list(rows)
    missing: Counter[str] = Counter()
    for label in sorted(counts, key=lambda k: (counts[k], k)):
        need = target - counts[label]
        pool = [r for r in rows if label in r["labels"] and not r.get("augmented")]
        pool = [pool[i] for i in rng.permutation(len(pool))]
        new: list[dict[str, Any]] = []
        if paraphraser is not None:
            new = _paraphrased(pool, need, paraphraser, paraphrases_per_call, missing)
        elif need > 0:
            new = [{**pool[i % len(pool)], "augmented": True, "source": f"{pool[i % len(pool)]['source']}+oversample"}
                   for i in range(need)]  # fmt: skip
        new = new[: max(need, 0)]
        out.extend(new)
        for r in new:
            counts.update(r["labels"])
    report.augmented += len(out) - len(rows)
    for k, v in missing.items():
        report.augment_missing[k] = report.augment_missing.get(k, 0) + v
    return out


def _paraphrased(
    pool: list[dict[str, Any]], need: int, paraphraser: Paraphraser, n: int, missing: Counter[str]
) -> list[dict[str, Any]]:
    """Rows paraphrased from `pool` until `need` exist, each source asked once (`n` paraphrases a call); an
    unanswered call is counted in `missing` by its reason."""
    new: list[dict[str, Any]] = []
    for src in pool:
        if len(new) >= need:
            break
        got = paraphraser.paraphrase(src["text"], n)
        if isinstance(got, Missing):
            missing[got.reason] += 1
            continue
        new += [{**src, "text": t, "augmented": True, "source": f"{src['source']}+paraphrase"} for t in got]
    return new
