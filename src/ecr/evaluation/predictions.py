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

With `on_error="skip"` every bad row is dropped instead and counted by reason in a `SkippedRows` (`malformed`:
not a JSON object or a field of the wrong type; `missing_field`; `unknown_label`; `duplicate_id`: the later row
is dropped), and a file whose every row is bad is still a `ManifestError`. `load_predictions` adds the check
against one split of a custom manifest (`read_split`, from `ecr.evaluation.manifest_split`): an id not in the
split (`not_in_dataset`) or a `label` other than the manifest's (`label_mismatch`) is a bad row the same way, and
the split's clips without a prediction are `missing_clips`, an error unless skipping, since scoring a subset
silently would be wrong (docs/method.md §5).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ecr.errors import ConfigError, ManifestError
from ecr.evaluation.manifest_split import DatasetSplit, DatasetSplitOptions, dataset_split, read_split
from ecr.labels import LabelSet
from ecr.prompts import parse_completion
from ecr.rows import BadRow, iter_rows

OnError = Literal["raise", "skip"]
SKIP_REASONS: tuple[str, ...] = (
    "malformed",
    "missing_field",
    "unknown_label",
    "duplicate_id",
    "not_in_dataset",
    "label_mismatch",
)
FIRST_SHOWN = 3  # locations of skipped rows / ids of missing clips named in the end-of-run line


class BadPrediction(ManifestError):
    """A predictions row that cannot be scored; `reason` (one of SKIP_REASONS) is its key in the skip counts."""

    def __init__(self, where: str, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(f"{where}: {message}")


@dataclass
class SkippedRows:
    """The rows `on_error="skip"` dropped from one file: a count per reason and the first few messages, so the
    command can say at the end what it left out instead of scoring fewer clips silently."""

    counts: Counter[str] = field(default_factory=Counter)
    first: list[str] = field(default_factory=list)  # "file:line: why", at most FIRST_SHOWN

    def add(self, err: BadPrediction) -> None:
        self.counts[err.reason] += 1
        if len(self.first) < FIRST_SHOWN:
            self.first.append(str(err))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        """{reason: count}, sorted (metrics.json's `skipped`)."""
        return dict(sorted(self.counts.items()))


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
        raise BadPrediction(where, "malformed", f"field {key!r} must be a string or null, got {type(value).__name__}")
    return value


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error: {on_error!r} is not 'raise' or 'skip'")


def _drop(err: BadPrediction, on_error: OnError, skipped: SkippedRows | None) -> None:
    """Raise `err` (on_error raise) or count it in `skipped`."""
    if on_error == "raise" or skipped is None:
        raise err
    skipped.add(err)


def _all_bad(path: Path, skipped: SkippedRows) -> ManifestError:
    counts = ", ".join(f"{k}: {v}" for k, v in skipped.as_dict().items())
    return ManifestError(f"{path}: every row is bad ({counts}), nothing left to score; first: {skipped.first[0]}")


def read_predictions(
    path: str | Path, label_set: LabelSet, on_error: OnError = "raise", *, skipped: SkippedRows | None = None
) -> list[Prediction]:
    """Every row of a predictions JSONL, validated (see the module docstring for the rules and errors).

    With `on_error="skip"` bad rows are dropped and counted into `skipped` (required then); a file of bad rows
    only is still an error.
    """
    _check_on_error(on_error)
    if on_error == "skip" and skipped is None:
        raise ValueError("read_predictions: on_error='skip' needs a SkippedRows to count the dropped rows in")
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: predictions file does not exist")
    out: list[Prediction] = []
    first_line: dict[str, int] = {}
    dropped = 0
    for lineno, row in iter_rows(path, format="jsonl"):
        where = f"{path}:{lineno}"
        try:
            if isinstance(row, BadRow):
                raise BadPrediction(where, "malformed", row.reason)
            clip = _clip_id(row, where)
            if clip in first_line:
                raise BadPrediction(where, "duplicate_id", f"duplicate id {clip!r} (first at line {first_line[clip]})")
            first_line[clip] = lineno
            out.append(_prediction(row, clip, label_set, where, lineno))
        except BadPrediction as err:
            _drop(err, on_error, skipped)
            dropped += 1
    if not out and dropped and skipped is not None:
        raise _all_bad(path, skipped)
    return out


def _clip_id(row: dict[str, Any], where: str) -> str:
    raw_id = row.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or raw_id == "":
        reason = "missing_field" if raw_id is None else "malformed"
        raise BadPrediction(where, reason, f"field 'id' must be a non-empty string, got {raw_id!r}")
    return str(raw_id)


def _prediction(row: dict[str, Any], clip: str, label_set: LabelSet, where: str, lineno: int) -> Prediction:
    """One row (its id already checked) as a `Prediction`; a `BadPrediction` naming `where` otherwise."""
    truth = _text(row, "label", where)
    if truth is None:
        raise BadPrediction(where, "missing_field", "field 'label' (the ground truth) is missing")
    label = label_set.normalize(truth)
    if label is None:
        raise BadPrediction(
            where, "unknown_label", f"label {truth!r} is not a label of {label_set.name!r} {list(label_set)}"
        )
    completion = _text(row, "completion", where)
    parsed = parse_completion(completion) if completion is not None else None
    if "prediction" in row:
        raw = _text(row, "prediction", where)
        prediction = label_set.normalize(raw) if raw is not None else None
        if raw is not None and prediction is None:
            raise BadPrediction(
                where,
                "unknown_label",
                f"prediction {raw!r} is not a label of {label_set.name!r} {list(label_set)} "
                "(write null for an unparseable answer)",
            )
    elif parsed is not None:
        prediction = label_set.normalize(parsed.answer)
    else:
        raise BadPrediction(where, "missing_field", "neither 'prediction' nor 'completion' is present")
    think = _text(row, "think", where) if "think" in row else (parsed.think if parsed is not None else None)
    sentences = row.get("sentences")
    if sentences is not None and not (
        isinstance(sentences, list)
        and all(isinstance(s, dict) and isinstance(s.get("labels"), dict) for s in sentences)
    ):
        raise BadPrediction(where, "malformed", "field 'sentences' must be a list of {'text', 'labels': {...}} objects")
    verifier = row.get("verifier")
    if verifier is not None and not isinstance(verifier, dict):
        raise BadPrediction(where, "malformed", "field 'verifier' must be an object")
    labels = _labels(row, label_set, where) if row.get("labels") is not None else None
    return Prediction(clip, label, prediction, think, completion, sentences, verifier, lineno, labels)


def _labels(row: dict[str, Any], label_set: LabelSet, where: str) -> tuple[str, ...]:
    """The row's compound truth, canonical and each label once; a ManifestError naming `where` otherwise."""
    raw = row["labels"]
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) for x in raw):
        raise BadPrediction(where, "malformed", f"field 'labels' must be a non-empty list of labels, got {raw!r}")
    out = []
    for x in raw:
        label = label_set.normalize(x)
        if label is None:
            raise BadPrediction(
                where, "unknown_label", f"labels: {x!r} is not a label of {label_set.name!r} {list(label_set)}"
            )
        out.append(label)
    return tuple(dict.fromkeys(out))


def check_against_split(
    path: Path,
    predictions: Sequence[Prediction],
    dataset: DatasetSplit,
    on_error: OnError = "raise",
    skipped: SkippedRows | None = None,
) -> tuple[list[Prediction], list[str]]:
    """The rows whose id is a clip of `dataset` with the manifest's label, and the ids of the split's clips that
    have no prediction (in manifest order). With on_error raise the first bad row, or any missing clip, is a
    ManifestError naming `path:line` (or the missing ids); with skip bad rows are counted in `skipped`."""
    _check_on_error(on_error)
    kept: list[Prediction] = []
    for p in predictions:
        where = f"{path}:{p.line}"
        try:
            truth = dataset.labels.get(p.id)
            if truth is None:
                raise BadPrediction(where, "not_in_dataset", f"id {p.id!r} is not a clip of {dataset.describe()}")
            if truth != p.label:
                raise BadPrediction(
                    where,
                    "label_mismatch",
                    f"label {p.label!r} of {p.id!r} differs from the manifest's {truth!r} ({dataset.describe()})",
                )
            kept.append(p)
        except BadPrediction as err:
            _drop(err, on_error, skipped)
    if predictions and not kept and skipped is not None:
        raise _all_bad(path, skipped)
    seen = {p.id for p in kept}
    missing = [clip for clip in dataset.labels if clip not in seen]
    if missing and on_error == "raise":
        raise ManifestError(
            f"{path}: {len(missing)} of the {len(dataset.labels)} clips of {dataset.describe()} have no prediction "
            f"(first: {', '.join(missing[:FIRST_SHOWN])}); --on_error skip scores the rest and reports them"
        )
    return kept, missing


@dataclass(frozen=True)
class PredictionsFile:
    """A predictions file read for scoring: the rows kept, what `on_error="skip"` dropped, and (with a dataset
    split) the split's clips that have no prediction."""

    path: Path
    rows: list[Prediction]
    skipped: SkippedRows
    missing_clips: list[str] | None = None  # None: no dataset split given

    def report(self) -> dict[str, Any]:
        """metrics.json's `skipped` ({reason: count}) and, with a dataset split, `missing_clips` (n, first ids)."""
        out: dict[str, Any] = {"skipped": self.skipped.as_dict()}
        if self.missing_clips is not None:
            out["missing_clips"] = {"n": len(self.missing_clips), "first": self.missing_clips[:FIRST_SHOWN]}
        return out

    def summary_lines(self) -> list[str]:
        """The end-of-run lines saying what was left out (none when nothing was)."""
        lines = []
        if self.skipped.total:
            counts = ", ".join(f"{k}: {v}" for k, v in self.skipped.as_dict().items())
            lines.append(
                f"{self.path}: skipped {self.skipped.total} bad rows ({counts}); first: "
                + " | ".join(self.skipped.first)
            )
        if self.missing_clips:
            lines.append(
                f"{self.path}: clips of the dataset split without a prediction: {len(self.missing_clips)} "
                f"(first: {', '.join(self.missing_clips[:FIRST_SHOWN])})"
            )
        return lines


def load_predictions(
    path: str | Path, label_set: LabelSet, on_error: OnError = "raise", dataset: DatasetSplit | None = None
) -> PredictionsFile:
    """`read_predictions`, then (with `dataset`) `check_against_split`: what `ecr score` and `ecr report` read."""
    path = Path(path)
    skipped = SkippedRows()
    rows = read_predictions(path, label_set, on_error, skipped=skipped)
    if dataset is None:
        return PredictionsFile(path, rows, skipped)
    kept, missing = check_against_split(path, rows, dataset, on_error, skipped)
    return PredictionsFile(path, kept, skipped, missing)


__all__ = [
    "SKIP_REASONS",
    "BadPrediction",
    "DatasetSplit",
    "DatasetSplitOptions",
    "OnError",
    "Prediction",
    "PredictionsFile",
    "SkippedRows",
    "check_against_split",
    "dataset_split",
    "load_predictions",
    "read_predictions",
    "read_split",
]
