"""`TextDataModule`: text emotion rows (an utterance or description + label + explanation) for text-only LMs.

The same stages that train on clips (SFT, ...) run on a text task through the `causal_lm` backbone, whose
`TextCollator` renders `text` + the instruction and, for SFT, the `<think>explanation</think><answer>label`
target. This module only turns a manifest into such samples; it reuses the clip pipeline's pieces:
- rows: `ecr.rows.iter_rows` (JSONL / CSV / TSV, `file:line`), the manifest field aliases
  (`manifests.pick_field`: `label`/`emotion`, `explanation`/`reason`, `split`, `id`), label normalisation
  through the `LabelSet` (`canonical_label`) and split aliases (`normalize_split`);
  an EMER CSV is read by `read_emer` and its `subtitles` become the text (clip files are not needed);
- splits: `assign_splits` (the manifest's `split` column wins; other rows get a seeded split);
- loading: `ResumableDataLoader` + `EpochSampler`, so training order is a function of (seed, epoch) and a run
  resumed from a checkpoint (epoch boundary or mid-epoch) sees the uninterrupted run's batches.
Hyper-parameters hold plain strings (no `Path`): checkpoints load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

import torch
from torch.utils.data import Dataset

from ecr.data.datamodule import SplitDataModule
from ecr.data.manifest_fields import canonical_label, normalize_split, pick_field, record_error
from ecr.data.release_readers import read_emer
from ecr.data.splits import DEFAULT_SPLIT_SEED, DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION
from ecr.errors import ConfigError, ManifestError
from ecr.labels import LabelSet, get_label_set
from ecr.rows import BadRow, iter_rows

TextFormat = Literal["custom", "emer"]


@dataclass(frozen=True)
class TextRecord:
    """One text manifest row: what the model reads (`text`), its label and the optional explanation."""

    id: str
    text: str
    label: str
    explanation: str | None = None
    split: str | None = None
    source: str = ""  # "file:line" of the manifest row, for error messages


class TextSample(TypedDict):
    """What `TextDataset` yields and a text collator (e.g. `TextCollator`) receives as a list."""

    id: str
    text: str
    label: str
    label_id: int
    explanation: str | None


def _text_of(row: dict[str, Any], field: str, where: str) -> str:
    value = row.get(field, row.get(field.lower()))
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"{where}: field {field!r} must be a non-empty string, got {value!r}")
    return value.strip()


def read_text_manifest(
    manifest: str | Path,
    labels: str | Sequence[str] | LabelSet = "dfew",
    text_field: str = "text",
    *,
    errors: list[ManifestError] | None = None,
) -> list[TextRecord]:
    """Read a JSONL/CSV/TSV of text rows: `text_field` and `label` required, `explanation`, `split`, `id` optional.

    Labels are normalised into `labels`; ids default to `row<line>` and must be unique. Bad rows raise a
    ManifestError naming `file:line` (or are appended to `errors` and skipped).
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: text manifest file does not exist")
    label_set = get_label_set(labels)
    records: list[TextRecord] = []
    seen: dict[str, str] = {}
    for lineno, row in iter_rows(manifest):
        where = f"{manifest}:{lineno}"
        try:
            if isinstance(row, BadRow):
                raise ManifestError(f"{where}: {row.reason}")
            text = _text_of(row, text_field, where)
            label_text = pick_field(row, "label")
            if label_text is None:
                raise ManifestError(f"{where}: missing the label (column 'label')")
            rid = str(pick_field(row, "id") or f"row{lineno}")
            if rid in seen:
                raise ManifestError(f"{where}: duplicate id {rid!r} (first at {seen[rid]})")
            expl = pick_field(row, "explanation")
            records.append(
                TextRecord(
                    id=rid,
                    text=text,
                    label=canonical_label(label_set, str(label_text), where),
                    explanation=None if expl is None else str(expl),
                    split=normalize_split(pick_field(row, "split"), where),
                    source=where,
                )
            )
            seen[rid] = where
        except ManifestError as err:
            record_error(err, errors)
    return records


def read_emer_text(
    manifest: str | Path, labels: str | Sequence[str] | LabelSet = "mafw", *, errors: list[ManifestError] | None = None
) -> list[TextRecord]:
    """EMER CSV as text rows: `subtitles` is the text, `reasons` the explanation (a row without subtitles fails)."""
    records: list[TextRecord] = []
    for clip in read_emer(manifest, labels=labels, errors=errors):
        try:
            text = _text_of(clip.meta, "subtitles", clip.source)
        except ManifestError as err:
            record_error(err, errors)
            continue
        records.append(TextRecord(clip.id, text, clip.label, clip.explanation, clip.split, clip.source))
    return records


class TextDataset(Dataset):
    """`records[i]` → `TextSample` (`label_id` = index in the label set)."""

    def __init__(self, records: Sequence[TextRecord], label_set: LabelSet) -> None:
        self.records = list(records)
        self.label_set = label_set

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> TextSample:
        r = self.records[i]
        return TextSample(
            id=r.id, text=r.text, label=r.label, label_id=self.label_set.index(r.label), explanation=r.explanation
        )


def collate_text(samples: list[TextSample]) -> dict[str, Any]:
    """Default collator (no model attached), keyed like `default_collate`: lists, `label_ids` long [B]."""
    return {
        "ids": [s["id"] for s in samples],
        "texts": [s["text"] for s in samples],
        "labels": [s["label"] for s in samples],
        "label_ids": torch.tensor([s["label_id"] for s in samples], dtype=torch.long),
        "explanations": [s["explanation"] for s in samples],
    }


TextCollate = Callable[[list[TextSample]], Any]


class TextDataModule(SplitDataModule):
    """Text emotion rows for text-only backbones (`policy.backbone: causal_lm`).

    Args:
        manifest: JSONL/CSV/TSV of text rows (`format: custom`) or an EMER CSV (`format: emer`).
        labels: label set: "dfew", "mafw" or a list of label names.
        format: "custom" (rows with `text_field`, `label`, optional `explanation`/`split`/`id`) or "emer"
            (text = the `subtitles` column, explanation = `reasons`).
        text_field: column holding the text ("custom" only).
        val_fraction: share of rows held out for validation when the manifest gives no validation split.
        test_fraction: share of rows for testing among rows that carry no split.
        seed: seed of the split assignment and of the shuffling order (epoch e: `EpochSampler`).
        batch_size: rows per batch.
        num_workers: DataLoader worker processes (collation, i.e. tokenisation, runs in them).
        shuffle: shuffle the training set each epoch (seeded).
        drop_last: drop the last incomplete training batch.
        collate_fn: task collator `list[TextSample] -> batch` (default: `collate_text`); SFT sets its own.
    """

    default_collate_fn = staticmethod(collate_text)

    def __init__(
        self,
        manifest: str | Path,
        labels: str | list[str] = "dfew",
        format: TextFormat = "custom",
        text_field: str = "text",
        val_fraction: float = DEFAULT_VAL_FRACTION,
        test_fraction: float = DEFAULT_TEST_FRACTION,
        seed: int = DEFAULT_SPLIT_SEED,
        batch_size: int = 8,
        num_workers: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        collate_fn: TextCollate | None = None,
    ) -> None:
        super().__init__()
        if format not in ("custom", "emer"):
            raise ConfigError(f"data.format: {format!r} is not one of custom, emer")
        if not text_field.strip():
            raise ConfigError("data.text_field: empty column name")
        # hparams go into checkpoints: plain strings, since torch.load(weights_only=True) rejects Path objects
        manifest = os.fspath(manifest)
        self.save_hyperparameters(ignore=["collate_fn"])
        self._init_splits(
            label_set=get_label_set(labels),
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
            batch_size=batch_size,
            num_workers=num_workers,
            shuffle=shuffle,
            drop_last=drop_last,
            collate_fn=collate_fn,
        )
        self.manifest = manifest
        self.format: TextFormat = format
        self.text_field = text_field

    # --------------------------------------------------------------------------------- SplitDataModule
    def read_records(self, errors: list[ManifestError] | None = None) -> list[TextRecord]:
        """Every row of the manifest (validated; see `read_text_manifest` / `read_emer_text`)."""
        if self.format == "emer":
            records = read_emer_text(self.manifest, self._label_set, errors=errors)
        else:
            records = read_text_manifest(self.manifest, self._label_set, self.text_field, errors=errors)
        if not records and errors is None:
            raise ManifestError(f"{self.manifest}: no rows")
        return records

    def _make_datasets(self, splits: dict[str, list[TextRecord]]) -> dict[str, TextDataset]:
        return {name: TextDataset(recs, self._label_set) for name, recs in splits.items()}

    def _describe(self) -> str:
        return f"text rows of {self.manifest}"

    def _loader_options(self, stage: str) -> dict[str, Any]:
        return {"on_error": "raise"}  # text rows never fail to "decode"


__all__ = [
    "TextDataModule",
    "TextDataset",
    "TextRecord",
    "TextSample",
    "collate_text",
    "read_emer_text",
    "read_text_manifest",
]
