"""The ERV's training data: labelled sentences (the JSONL written by `ecr label`) and their DataModule.

Each row is `{"text": str, "labels": [str, ...], "probs": {label: p} | null, "source": str, ...}` with optional
`group` (rows sharing a group — a sentence, its oversampled copies and its paraphrases — always land in the
same split, so augmentation never leaks into validation), `augmented` (true for copies/paraphrases; these are
dropped from validation so it measures real sentences once) and `split` ("train" | "val"; when present it
wins over the seeded split).

Batches are raw texts plus targets: the module tokenizes with its own student tokenizer, which keeps this
pipeline independent of the student. Targets are float [B, C]: the teacher's probabilities when it gave them
(soft targets, `soft_targets=True`), else multi-hot labels; `hard` is always the multi-hot labels (metrics).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict, cast

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from ecr.data.loader import ResumableDataLoader
from ecr.data.sampler import EpochSampler, WeightedEpochSampler, trainer_shard
from ecr.errors import ConfigError, LabelError, ManifestError
from ecr.labels import LabelSet, resolve_label_space
from ecr.rows import BadRow, iter_rows


class SentenceRow(TypedDict, total=False):
    text: str
    labels: list[str]
    probs: dict[str, float] | None
    source: str
    group: str
    augmented: bool
    split: str


class SentenceBatch(TypedDict):
    text: list[str]
    target: torch.Tensor  # float [B, C]
    hard: torch.Tensor  # float [B, C] multi-hot


def read_sentence_rows(path: str | Path, space: LabelSet) -> list[SentenceRow]:
    """Read and validate a labelled-sentence JSONL (`ecr.rows.iter_rows`); labels are normalised into `space`.

    Raises ManifestError (bad line/field) or LabelError (a label outside the space), naming file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: labelled-sentence file not found (write it with `ecr label`)")
    rows: list[SentenceRow] = []
    for lineno, row in iter_rows(path, format="jsonl"):
        where = f"{path}:{lineno}"
        if isinstance(row, BadRow) and row.json_error is not None:
            raise ManifestError(f"{where}: not valid JSON ({row.json_error})")
        if isinstance(row, BadRow) or not isinstance(row.get("text"), str) or not row["text"].strip():
            raise ManifestError(f"{where}: expected an object with a non-empty string field 'text'")
        labels = row.get("labels")
        if not isinstance(labels, list) or not labels:
            raise ManifestError(f"{where}: field 'labels' must be a non-empty list of label names")
        row["labels"] = [space.canonical(str(x), where=f"{where} field 'labels'") for x in labels]
        probs = row.get("probs")
        if probs is not None:
            if not isinstance(probs, dict):
                raise ManifestError(f"{where}: field 'probs' must be an object label -> probability or null")
            row["probs"] = {space.canonical(k, where=f"{where} field 'probs'"): float(v) for k, v in probs.items()}
        split = row.get("split")
        if split is not None and split not in ("train", "val"):
            raise ManifestError(f"{where}: field 'split' must be 'train' or 'val', got {split!r}")
        rows.append(cast(SentenceRow, row))  # JSON, validated field by field above
    if not rows:
        raise ManifestError(f"{path}: no labelled sentences")
    return rows


def _in_val(key: str, seed: int, val_fraction: float) -> bool:
    h = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < val_fraction


def split_rows(
    rows: Sequence[SentenceRow], *, val_fraction: float, seed: int
) -> tuple[list[SentenceRow], list[SentenceRow]]:
    """(train, val): the `split` field when present, else a seeded hash of the row's group (or text)."""
    train, val = [], []
    for row in rows:
        split = row.get("split")
        if split is None:
            split = "val" if _in_val(row.get("group") or row["text"], seed, val_fraction) else "train"
        if split == "val":
            if not row.get("augmented"):
                val.append(row)
        else:
            train.append(row)
    return train, val


class SentenceDataset(Dataset):
    """Rows -> {"text", "target" float[C], "hard" float[C]}."""

    def __init__(self, rows: Sequence[SentenceRow], label_names: Sequence[str], *, soft_targets: bool = True) -> None:
        self.rows = list(rows)
        self.index = {n: i for i, n in enumerate(label_names)}
        self.num_classes = len(label_names)
        self.soft_targets = soft_targets

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        hard = torch.zeros(self.num_classes)
        hard[[self.index[x] for x in row["labels"]]] = 1.0
        target = hard
        probs = row.get("probs")
        if self.soft_targets and probs:
            target = torch.zeros(self.num_classes)
            for name, p in probs.items():
                target[self.index[name]] = min(max(p, 0.0), 1.0)
        return {"text": row["text"], "target": target, "hard": hard}


def collate_sentences(items: list[dict[str, Any]]) -> SentenceBatch:
    return {
        "text": [it["text"] for it in items],
        "target": torch.stack([it["target"] for it in items]),
        "hard": torch.stack([it["hard"] for it in items]),
    }


class SentenceDataModule(LightningDataModule):
    """Labelled sentences for ERV distillation.

    Args:
        path: JSONL written by `ecr label`.
        labels: the verifier's label space: "goemotions", a task set ("dfew", "mafw"; neutral added) or a list.
        val_path: optional separate validation JSONL (then `path` is all training data).
        val_fraction: share of groups held out when no split field / val_path is given.
        seed: seed of the hash split.
        batch_size: sentences per batch.
        sampler: "shuffle", or "balanced" (rows drawn with weights inverse to the frequency of their rarest
            label — an alternative to pos_weight for imbalance).
        soft_targets: use the teacher's probabilities as targets when a row has them.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        path: str | Path,
        labels: str | list[str] = "dfew",
        *,
        val_path: str | Path | None = None,
        val_fraction: float = 0.2,
        seed: int = 0,
        batch_size: int = 32,
        sampler: Literal["shuffle", "balanced"] = "shuffle",
        soft_targets: bool = True,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
        # hparams go into checkpoints: plain strings, since torch.load(weights_only=True) rejects Path objects
        path = os.fspath(path)
        val_path = os.fspath(val_path) if val_path is not None else None
        self.save_hyperparameters()
        self.path = path
        self.val_path = val_path
        self.label_names = list(resolve_label_space(labels))
        self.space = LabelSet("verifier", tuple(self.label_names))
        self.val_fraction = val_fraction
        self.seed = seed
        self.batch_size = batch_size
        self.sampler = sampler
        self.soft_targets = soft_targets
        self.num_workers = num_workers
        self.train_rows: list[SentenceRow] = []
        self.val_rows: list[SentenceRow] = []

    def setup(self, stage: str | None = None) -> None:
        if self.train_rows:
            return
        rows = read_sentence_rows(self.path, self.space)
        if self.val_path:
            self.train_rows = [r for r in rows if r.get("split") != "val"]
            self.val_rows = [r for r in read_sentence_rows(self.val_path, self.space) if not r.get("augmented")]
        else:
            self.train_rows, self.val_rows = split_rows(rows, val_fraction=self.val_fraction, seed=self.seed)
        if not self.train_rows or not self.val_rows:
            raise ManifestError(
                f"{self.path}: split gave {len(self.train_rows)} train / {len(self.val_rows)} val sentences; "
                "need both (more data, another val_fraction, or a val_path)"
            )

    def label_counts(self) -> torch.Tensor:
        """Positives per class in the training rows, long [C] (for pos_weight)."""
        counts = torch.zeros(len(self.label_names), dtype=torch.long)
        index = {n: i for i, n in enumerate(self.label_names)}
        for row in self.train_rows:
            for name in row["labels"]:
                counts[index[name]] += 1
        return counts

    def _dataset(self, rows: Sequence[SentenceRow]) -> SentenceDataset:
        return SentenceDataset(rows, self.label_names, soft_targets=self.soft_targets)

    def train_dataloader(self) -> ResumableDataLoader:
        ds = self._dataset(self.train_rows)
        # Order = f(seed, epoch) (not the global RNG) and a stateful loader: a run resumed at an epoch boundary
        # or mid-epoch sees the uninterrupted run's batches.
        trainer = getattr(self, "trainer", None)
        if self.sampler == "balanced":
            counts = self.label_counts().clamp(min=1).float()
            index = {n: i for i, n in enumerate(self.label_names)}
            weights = [float((1.0 / counts[[index[x] for x in r["labels"]]]).max()) for r in self.train_rows]
            world, rank = trainer_shard(trainer)
            sampler: EpochSampler = WeightedEpochSampler(weights, seed=self.seed, num_replicas=world, rank=rank)
        else:
            sampler = EpochSampler.for_trainer(ds, trainer, shuffle=True, seed=self.seed)
        return ResumableDataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=collate_sentences,
            num_workers=self.num_workers,
            on_error="raise",
            generator=torch.Generator().manual_seed(self.seed),
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self._dataset(self.val_rows),
            batch_size=self.batch_size,
            collate_fn=collate_sentences,
            num_workers=self.num_workers,
        )


__all__ = ["LabelError", "SentenceDataModule", "SentenceDataset", "read_sentence_rows", "split_rows"]
