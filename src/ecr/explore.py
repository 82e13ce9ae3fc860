"""Helpers for looking at explanations in a notebook: what the verifier reads in each sentence.

The explanation reward is a ratio over sentences, so when it surprises you the useful view is per sentence:
which emotions the verifier gives each sentence and whether they contain the ground truth. These functions
return plain rows (lists of dicts) so they work with or without pandas. `read_jsonl` (from `ecr.rows`) reads a
manifest, predictions or labelled-sentence file.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from ecr.models.verifier import Verifier
from ecr.prompts import format_target
from ecr.rl.rewards import ExplanationReward
from ecr.rows import read_jsonl


def sentence_table(reward: ExplanationReward, completions: Sequence[str], labels: Sequence[str]) -> list[dict]:
    """One row per sentence: completion index, sentence, verifier labels (with p), and whether they hold the truth.

    Reads through the reward's own `SentenceReader` (splitter, sentence cap, threshold, label cap, mapping), so
    the table explains the reward exactly.
    """
    reader = reward.reader
    rows = []
    for i, sentences in enumerate(reader.sentence_labels(completions, digits=3)):
        truth = reader.label_set.canonical(labels[i], where=f"labels[{i}]")
        truth_class = reader.verifier_labels[reader.mapping[truth]]
        for s in sentences or ():
            rows.append({
                "completion": i,
                "truth": truth,
                "sentence": s["text"],
                "labels": s["labels"],
                "matches_truth": truth_class in s["labels"],
            })  # fmt: skip
    return rows


def task_labels(verifier: Verifier, rows: Iterable[dict[str, Any]] = ()) -> str | list[str]:
    """The task's label set for a notebook's reward, never hard-coded: the verifier folder's saved `task` (a
    built-in name or a list), else the task labels of its saved `mapping`, else the labels of the manifest
    `rows` (in the verifier's class order, then first appearance)."""
    task = getattr(verifier, "task", None)
    if task:
        return task if isinstance(task, str) else list(task)
    mapping = getattr(verifier, "mapping", None)
    if mapping:
        return list(mapping)
    seen = list(dict.fromkeys(str(r["label"]) for r in rows if r.get("label")))
    if not seen:
        raise ValueError("task_labels: the verifier folder names no task and the manifest rows have no label")
    order = [lbl for lbl in verifier.label_names if lbl in seen]
    return order + [lbl for lbl in seen if lbl not in order]


def explanation_rewards_of_manifest(
    rows: Iterable[dict[str, Any]], reward: ExplanationReward, *, group_by: str = "explanation_consistent"
) -> dict[Any, float]:
    """Mean explanation reward of the manifest's reference explanations, grouped by a manifest field.

    Each row's explanation is wrapped as a completion (`format_target`) and scored against the row's label: on
    the synthetic dataset, rows made inconsistent on purpose should score clearly lower.
    """
    rows = [r for r in rows if r.get("explanation")]
    completions = [format_target(r["explanation"], r["label"]) for r in rows]
    scores = reward(completions, [r["label"] for r in rows])
    sums: dict[Any, list[float]] = defaultdict(list)
    for r, s in zip(rows, scores, strict=True):
        sums[r.get(group_by)].append(s)
    return {k: sum(v) / len(v) for k, v in sums.items()}


__all__ = ["Verifier", "explanation_rewards_of_manifest", "read_jsonl", "sentence_table", "task_labels"]
