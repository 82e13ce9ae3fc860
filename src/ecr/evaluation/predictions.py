"""The predictions file `ecr predict` writes and `ecr score` reads: one JSON object per clip and line.

Fields (written by `ecr.modules.predict.PredictModule` + `ecr.evaluation.PredictionWriter`):
`id`, `label` (ground truth, canonical), `prediction` (canonical label or null when the answer is unparseable
or off-list), `answer_text` (the raw `<answer>` text or null), `think` (the `<think>` text or null),
`completion` (the decoded output), `num_tokens`, `truncated`, `sentences` (each `{"text", "labels": {class:
p}}`, the verifier's label set, when a verifier was configured) and `verifier` (its folder, τ and the task ->
verifier class mapping), `generation` (the settings), `seed`, `sampling_seed` (sampling only) and `model`
(backbone, weights, adapter, checkpoint); `labels` (all of the clip's ground-truth labels, canonical: MAFW's
compound truth or a custom manifest's `labels`), only for clips that have them; with best-of-N reranking
`rerank`, `chosen` and `candidates` (kept as written, not read back here).

`read_predictions` is strict: a line that is not a JSON object, a missing or non-string `id`, a `label` or
`prediction` that is not a label of the set, or an id seen before is a `ManifestError` naming `file:line`.
Only `id` and `label` are required; `prediction` is re-derived from `completion` when absent. `labels`, when
present, must be a non-empty list of labels of the set (`ManifestError` naming the line otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecr.errors import ManifestError
from ecr.labels import LabelSet
from ecr.prompts import parse_completion
from ecr.rows import read_rows


@dataclass(frozen=True)
class Prediction:
    """One row of a predictions file, validated (labels canonical for the active label set)."""

    id: str
    label: str
    prediction: str | None
    think: str | None
    completion: str | None = None
    sentences: list[dict[str, Any]] | None = None
    verifier: dict[str, Any] | None = None
    line: int = 0
    labels: tuple[str, ...] | None = None  # compound ground truth (every label of the clip), when the file has it


def _text(row: dict[str, Any], key: str, where: str) -> str | None:
    value = row.get(key)
    if value is not None and not isinstance(value, str):
        raise ManifestError(f"{where}: field {key!r} must be a string or null, got {type(value).__name__}")
    return value


def read_predictions(path: str | Path, label_set: LabelSet) -> list[Prediction]:
    """Every row of a predictions JSONL, validated (see the module docstring for the rules and errors)."""
    path = Path(path)
    out: list[Prediction] = []
    first_line: dict[str, int] = {}
    for lineno, row in read_rows(path, what="predictions file", format="jsonl"):
        where = f"{path}:{lineno}"
        raw_id = row.get("id")
        if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or raw_id == "":
            raise ManifestError(f"{where}: field 'id' must be a non-empty string, got {raw_id!r}")
        clip = str(raw_id)
        if clip in first_line:
            raise ManifestError(f"{where}: duplicate id {clip!r} (first at line {first_line[clip]})")
        first_line[clip] = lineno
        truth = _text(row, "label", where)
        if truth is None:
            raise ManifestError(f"{where}: field 'label' (the ground truth) is missing")
        label = label_set.normalize(truth)
        if label is None:
            raise ManifestError(f"{where}: label {truth!r} is not a label of {label_set.name!r} {list(label_set)}")
        completion = _text(row, "completion", where)
        parsed = parse_completion(completion) if completion is not None else None
        if "prediction" in row:
            raw = _text(row, "prediction", where)
            prediction = label_set.normalize(raw) if raw is not None else None
            if raw is not None and prediction is None:
                raise ManifestError(
                    f"{where}: prediction {raw!r} is not a label of {label_set.name!r} {list(label_set)} "
                    "(write null for an unparseable answer)"
                )
        elif parsed is not None:
            prediction = label_set.normalize(parsed.answer)
        else:
            raise ManifestError(f"{where}: neither 'prediction' nor 'completion' is present")
        think = _text(row, "think", where) if "think" in row else (parsed.think if parsed is not None else None)
        sentences = row.get("sentences")
        if sentences is not None and not (
            isinstance(sentences, list)
            and all(isinstance(s, dict) and isinstance(s.get("labels"), dict) for s in sentences)
        ):
            raise ManifestError(f"{where}: field 'sentences' must be a list of {{'text', 'labels': {{...}}}} objects")
        verifier = row.get("verifier")
        if verifier is not None and not isinstance(verifier, dict):
            raise ManifestError(f"{where}: field 'verifier' must be an object")
        labels = _labels(row, label_set, where) if row.get("labels") is not None else None
        out.append(Prediction(clip, label, prediction, think, completion, sentences, verifier, lineno, labels))
    return out


def _labels(row: dict[str, Any], label_set: LabelSet, where: str) -> tuple[str, ...]:
    """The row's compound truth, canonical and each label once; a ManifestError naming `where` otherwise."""
    raw = row["labels"]
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
        raise ManifestError(f"{where}: field 'labels' must be a non-empty list of labels, got {raw!r}")
    out = []
    for x in raw:
        label = label_set.normalize(x)
        if label is None:
            raise ManifestError(f"{where}: labels: {x!r} is not a label of {label_set.name!r} {list(label_set)}")
        out.append(label)
    return tuple(dict.fromkeys(out))


__all__ = ["Prediction", "read_predictions"]
