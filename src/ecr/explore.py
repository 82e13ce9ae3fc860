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

from ecr.models.verifier import Verifier, decide
from ecr.prompts import format_target
from ecr.rl.rewards import ExplanationReward
from ecr.rows import read_jsonl


def sentence_table(reward: ExplanationReward, completions: Sequence[str], labels: Sequence[str]) -> list[dict]:
    """One row per sentence: completion index, sentence, verifier labels (with p), and whether they hold the truth.

    Uses the reward's own splitter, threshold, label cap and mapping, so the table explains the reward exactly.
    """
    per = [reward.sentences(c)[0] for c in completions]
    flat = [s for sents in per for s in sents]
    if not flat:
        return []
    probs = reward.verifier.probs(flat).float().cpu()  # [S, C]
    sets = decide(probs, reward.threshold, reward.max_labels)  # [S, C]
    names = reward.verifier_labels
    rows, k = [], 0
    for i, sents in enumerate(per):
        truth = reward.label_set.canonical(labels[i], where=f"labels[{i}]")
        truth_idx = reward.mapping[truth]
        for sentence in sents:
            chosen = sets[k].nonzero().flatten().tolist()
            rows.append({
                "completion": i,
                "truth": truth,
                "sentence": sentence,
                "labels": {names[j]: round(float(probs[k, j]), 3) for j in chosen},
                "matches_truth": truth_idx in chosen,
            })  # fmt: skip
            k += 1
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
