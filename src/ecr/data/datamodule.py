"""`ClipDataModule`: the one LightningDataModule that feeds every stage (SFT, verifier data, GRPO, eval).

Built from config (`data: class_path: ecr.data.ClipDataModule`), it reads the manifest in `setup()`, splits it
into train/val/test deterministically, and serves DataLoaders whose workers decode clips (optionally through
the on-disk cache). It does not know any task: the task's collator (list[ClipSample] -> model batch) goes into
the public `collate_fn` attribute (or the `collate_fn` argument) where the module and the DataModule are paired,
e.g. `ecr.modules.wiring.connect(module, datamodule)`, which `ecr fit/test/predict` call.

Clips that fail to decode follow `on_error`: "raise" stops training with the `ClipError`; "skip" drops them
from their batch, and at the end of each epoch the skipped clips are printed, logged (`data/skipped_<stage>`)
and kept in `skipped` (last pass) and `skip_counts` (all passes), so nothing fails silently.

Resuming is exact: the training order is an `EpochSampler`'s, a pure function of (seed, epoch) that
Lightning advances with `set_epoch`, and the training loader's position in its epoch is saved in checkpoints
(Lightning's stateful-dataloader support), so a run resumed at an epoch boundary or mid-epoch sees the same
remaining batches as an uninterrupted one (mid-epoch: same batch_size, dataset and world size required, else
a warning and the epoch restarts). Clips skipped before an interruption are not reported again after it.
Hyper-parameters hold plain strings (no `Path`): checkpoints load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info

from ecr.data.cache import ClipCache
from ecr.data.dataset import ClipDataset, default_collate
from ecr.data.loader import OnError, ResumableDataLoader
from ecr.data.manifests import DatasetFormat, read_dataset
from ecr.data.sampler import EpochSampler
from ecr.data.splits import (
    DEFAULT_SPLIT_SEED,
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    assign_splits,
    check_fractions,
)
from ecr.data.types import ClipFailure, ClipRecord, ClipSample
from ecr.errors import ConfigError, ManifestError
from ecr.labels import LabelSet, get_label_set

Stage = Literal["train", "val", "test"]


class SplitDataModule(LightningDataModule):
    """What every task DataModule shares: the active label set, an injectable task collator, seeded split
    assignment, and resumable loaders whose training order is an `EpochSampler`'s (a function of seed, epoch).

    Subclasses call `_init_splits` in `__init__` and implement `read_records`, `_make_datasets` and `_describe`;
    `_loader_options(stage)` adds DataLoader options of their own.
    """

    default_collate_fn: Callable[[list[Any]], Any] = staticmethod(default_collate)
    predict_split: str = "test"  # the split the predict loop runs on (a subclass option may change it)

    def _init_splits(
        self,
        *,
        label_set: LabelSet,
        val_fraction: float,
        test_fraction: float,
        seed: int,
        batch_size: int,
        num_workers: int,
        shuffle: bool,
        drop_last: bool,
        collate_fn: Callable[[list[Any]], Any] | None,
    ) -> None:
        check_fractions(val_fraction, test_fraction)
        if batch_size < 1 or num_workers < 0:
            raise ConfigError(f"data: batch_size must be >= 1 and num_workers >= 0, got {batch_size}/{num_workers}")
        self._label_set = label_set
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.drop_last = drop_last
        self._collate_fn = collate_fn
        self.splits: dict[str, list[Any]] | None = None
        self.datasets: dict[str, Any] = {}

    # -------------------------------------------------------------------------------------- properties
    @property
    def label_set(self) -> LabelSet:
        """The active label set (from config), shared by every stage that consumes this data."""
        return self._label_set

    @property
    def collate_fn(self) -> Callable[[list[Any]], Any]:
        """The task collator used by the next DataLoader built (the module's default unless one was set)."""
        return self._collate_fn or type(self).default_collate_fn

    @collate_fn.setter
    def collate_fn(self, fn: Callable[[list[Any]], Any] | None) -> None:
        self._collate_fn = fn

    # ------------------------------------------------------------------------------------ subclass hooks
    def read_records(self, errors: list | None = None) -> list[Any]:
        """Every row of the configured dataset, validated."""
        raise NotImplementedError

    def _make_datasets(self, splits: dict[str, list[Any]]) -> dict[str, Any]:
        raise NotImplementedError

    def _describe(self) -> str:
        """Where the data comes from, for log lines and errors."""
        raise NotImplementedError

    def _loader_options(self, stage: str) -> dict[str, Any]:
        return {}

    # ----------------------------------------------------------------------------------------- set-up
    def setup(self, stage: str | None = None) -> None:
        """Read the rows and build the split datasets (nothing is decoded here); idempotent."""
        if self.splits is not None:
            return
        self.splits = assign_splits(
            self.read_records(), val_fraction=self.val_fraction, test_fraction=self.test_fraction, seed=self.seed
        )
        self.datasets = self._make_datasets(self.splits)
        sizes = {k: len(v) for k, v in self.splits.items()}
        rank_zero_info(f"[ecr.data] {self._describe()}: {sizes} rows, labels {list(self._label_set)}")

    def _dataset(self, split: str) -> Any:
        if self.splits is None:
            self.setup()
        ds = self.datasets[split]
        if len(ds) == 0:
            raise ConfigError(f"data: the {split!r} split of {self._describe()} is empty (check its split column)")
        return ds

    # ------------------------------------------------------------------------------------ dataloaders
    def _loader(self, split: str, stage: str, *, train: bool) -> ResumableDataLoader:
        dataset = self._dataset(split)
        sampler = None
        if train:  # order = f(seed, epoch), sharded over the Trainer's processes
            trainer = getattr(self, "trainer", None)
            sampler = EpochSampler.for_trainer(dataset, trainer, shuffle=self.shuffle, seed=self.seed)
        return ResumableDataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=self.drop_last and train,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            # seeds only the workers' base seed; keeps the global RNG (dropout, ...) untouched by loaders
            generator=torch.Generator().manual_seed(self.seed),
            **self._loader_options(stage),
        )

    def train_dataloader(self) -> ResumableDataLoader:
        return self._loader("train", "train", train=True)

    def val_dataloader(self) -> ResumableDataLoader:
        return self._loader("val", "val", train=False)

    def test_dataloader(self) -> ResumableDataLoader:
        return self._loader("test", "test", train=False)

    def predict_dataloader(self) -> ResumableDataLoader:
        # the test split by default; `predict_split: train` generates on training clips (e.g. the SFT policy's
        # own explanations, which the ERV teacher labels), always in order and never shuffled
        return self._loader(self.predict_split, "predict", train=False)


def _check_clip_options(
    format: str,
    manifest: str | Path | None,
    labels: str | list[str] | None,
    num_frames: int,
    sample_rate: int,
    on_error: str,
    predict_split: str,
) -> None:
    """A `ConfigError` naming the `data.*` field of a `ClipDataModule` option that cannot work."""
    if predict_split not in ("train", "val", "test"):
        raise ConfigError(f"data.predict_split: {predict_split!r} is not one of train, val, test")
    if format not in ("custom", "dfew", "mafw", "emer"):
        raise ConfigError(f"data.format: {format!r} is not one of custom, dfew, mafw, emer")
    if format in ("custom", "emer") and manifest is None:
        raise ConfigError(f"data.manifest: format {format!r} needs a manifest file")
    if on_error not in ("skip", "raise"):
        raise ConfigError(f"data.on_error: {on_error!r} is not 'skip' or 'raise'")
    if num_frames < 1 or sample_rate <= 0:
        raise ConfigError(f"data: num_frames and sample_rate must be positive, got {num_frames}/{sample_rate}")
    if labels is None and format in ("custom", "emer"):
        raise ConfigError(f"data.labels: format {format!r} needs a label set (dfew, mafw or a list)")


class ClipDataModule(SplitDataModule):
    """Synchronised video+audio clips of a DFEW/MAFW/EMER/custom dataset, decoded in DataLoader workers.

    Args:
        root: dataset root; every clip path must stay inside it.
        format: manifest format: "custom" (JSONL/CSV), "dfew", "mafw" or "emer".
        manifest: manifest file for "custom"/"emer" (relative to the working dir or to `root`).
        labels: label set: "dfew", "mafw" or a list of label names; defaults to the dataset's own set for
            DFEW/MAFW and is required for custom/EMER manifests.
        fold: DFEW/MAFW fold (1..5); its train file gives train (+ val), its test file gives test.
        val_fraction: share of clips held out for validation when the source has no validation split.
        test_fraction: share of clips for testing among rows that carry no split (the defaults are
            `ecr.data.splits`', shared by `ecr score`/`ecr report --manifest`).
        num_frames: frames per clip, at the midpoints of equal segments.
        sample_rate: audio sample rate (Hz) after mono down-mix and resampling.
        batch_size: clips per batch.
        num_workers: DataLoader worker processes that decode clips.
        seed: seed of the split assignment and of the shuffling order (epoch e: `EpochSampler` with seed + e).
        cache_dir: folder of the on-disk cache of decoded clips (None: no cache).
        on_error: "skip" a clip that cannot be decoded (counted, reported each epoch) or "raise".
        collate_fn: task collator `list[ClipSample] -> batch` (default: `default_collate`, a dict).
        shuffle: shuffle the training set each epoch (seeded).
        drop_last: drop the last incomplete training batch.
        pin_memory: pin batches in page-locked memory (for GPU training).
        persistent_workers: keep decoding workers alive between epochs (saves their start-up each epoch).
        predict_split: the split `ecr predict` runs on: "test" (default), "val" or "train" (e.g. to collect the
            SFT policy's own explanations of training clips for the ERV teacher).
    """

    def __init__(
        self,
        root: str | Path,
        format: DatasetFormat = "custom",
        manifest: str | Path | None = None,
        labels: str | list[str] | None = None,
        fold: int = 1,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        test_fraction: float = DEFAULT_TEST_FRACTION,
        num_frames: int = 8,
        sample_rate: int = 16000,
        batch_size: int = 4,
        num_workers: int = 0,
        seed: int = DEFAULT_SPLIT_SEED,
        cache_dir: str | Path | None = None,
        on_error: OnError = "skip",
        collate_fn: Callable[[list[ClipSample]], Any] | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        predict_split: Literal["train", "val", "test"] = "test",
    ) -> None:
        super().__init__()
        _check_clip_options(format, manifest, labels, num_frames, sample_rate, on_error, predict_split)
        # hparams go into checkpoints: plain strings, since torch.load(weights_only=True) rejects Path objects
        root = os.fspath(root)
        manifest = os.fspath(manifest) if manifest is not None else None
        cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
        self.save_hyperparameters(ignore=["collate_fn"])
        self._init_splits(
            label_set=get_label_set(labels if labels is not None else format),
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
            batch_size=batch_size,
            num_workers=num_workers,
            shuffle=shuffle,
            drop_last=drop_last,
            collate_fn=collate_fn,
        )
        self.root = Path(root)
        self.format = format
        self.manifest = manifest
        self.labels = labels
        self.fold = fold
        self.num_frames = num_frames
        self.sample_rate = sample_rate
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.on_error: OnError = on_error
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.predict_split = predict_split
        self.skipped: dict[str, list[ClipFailure]] = {"train": [], "val": [], "test": [], "predict": []}
        self.skip_counts: dict[str, int] = {"train": 0, "val": 0, "test": 0, "predict": 0}
        self._epoch_counter: dict[str, int] = {}

    # --------------------------------------------------------------------------------- SplitDataModule
    def read_records(self, errors: list | None = None) -> list[ClipRecord]:
        """Every manifest row of the configured dataset (DFEW/MAFW: train + test files of the fold)."""
        records = read_dataset(self.format, self.root, self.manifest, self._label_set, self.fold, errors=errors)
        if not records and errors is None:
            raise ManifestError(f"{self.manifest or self.root}: no rows (an empty manifest or label files)")
        return records

    def _make_datasets(self, splits: dict[str, list[ClipRecord]]) -> dict[str, ClipDataset]:
        cache = ClipCache(self.cache_dir) if self.cache_dir is not None else None
        return {
            name: ClipDataset(
                recs, self._label_set, num_frames=self.num_frames, sample_rate=self.sample_rate, cache=cache
            )
            for name, recs in splits.items()
        }

    def _describe(self) -> str:
        return f"{self.format} dataset at {self.root}"

    def _loader_options(self, stage: str) -> dict[str, Any]:
        return {
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers and self.num_workers > 0,
            "on_error": self.on_error,
            "reporter": lambda failures, batches: self._report(stage, failures, batches),
        }

    # -------------------------------------------------------------------------------------- reporting
    def _report(self, stage: str, failures: list[ClipFailure], batches: int) -> None:
        """End of a pass over a split: remember, print and log the clips that were skipped."""
        epoch = self._epoch_counter.get(stage, 0)
        self._epoch_counter[stage] = epoch + 1
        self.skipped[stage] = list(failures)
        self.skip_counts[stage] += len(failures)
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.logger is not None and not trainer.sanity_checking:
            trainer.logger.log_metrics({f"data/skipped_{stage}": float(len(failures))}, step=trainer.global_step)
        if not failures or (trainer is not None and not trainer.is_global_zero):
            return
        lines = [
            f"[ecr.data] {stage} pass {epoch}: skipped {len(failures)} clip(s) that could not be decoded "
            f"({batches} batches used):"
        ]
        lines += [f"  {f.path}: {f.reason}: {f.detail}" + (f" [{f.source}]" if f.source else "") for f in failures]
        print("\n".join(lines), file=sys.stderr, flush=True)
