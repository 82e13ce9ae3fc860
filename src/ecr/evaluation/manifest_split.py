"""The clips a predictions file must cover: one split of a custom manifest, assigned as the DataModule assigns it.

`ecr score` and `ecr report --manifest M --split S` check the predictions against it (`check_against_split` in
`ecr.evaluation.predictions`, which re-exports these names): a prediction outside the split or with another
label is a bad row, and a clip of the split without a prediction is reported. A module of its own: reading a
manifest's split is about the dataset (`ecr.data`'s readers and split rule), not about the predictions file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypedDict, Unpack

from ecr.data.splits import DEFAULT_SPLIT_SEED, DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION
from ecr.errors import ConfigError, ManifestError
from ecr.labels import LabelSet


@dataclass(frozen=True)
class DatasetSplit:
    """The clips of one split of a custom manifest (id -> canonical label, manifest order) a file must cover."""

    manifest: Path
    split: str
    labels: dict[str, str]

    def describe(self) -> str:
        return f"the {self.split!r} split of {self.manifest}"


def read_split(
    manifest: str | Path,
    label_set: LabelSet,
    split: str = "test",
    *,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SPLIT_SEED,
) -> DatasetSplit:
    """One split of a custom JSONL/CSV manifest, assigned exactly as `ClipDataModule` does: a row's own `split`,
    else the seeded `assign_splits` with the same `val_fraction`/`test_fraction`/`seed` (docs/method.md §6).

    Only ids, labels and splits are read; clip paths are never opened, so they are resolved against the
    filesystem root (a manifest meant for another `data.root` still reads). Raises ManifestError for a bad
    manifest row or an empty split, ConfigError for a split that is not train/val/test.
    """
    from ecr.data.manifests import read_dataset
    from ecr.data.splits import assign_splits, check_fractions

    if split not in ("train", "val", "test"):
        raise ConfigError(f"split: {split!r} is not one of train, val, test")
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: manifest file does not exist")
    records = read_dataset("custom", Path(manifest.resolve().anchor), manifest, label_set)
    check_fractions(val_fraction, test_fraction, where="--manifest split")
    splits = assign_splits(records, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    if not splits[split]:
        sizes = {k: len(v) for k, v in splits.items()}
        raise ManifestError(
            f"{manifest}: the {split!r} split is empty ({sizes}); rows without a 'split' are assigned by "
            "--val_fraction/--test_fraction/--split_seed, give the values of the config that ran ecr predict"
        )
    return DatasetSplit(manifest, split, {r.id: r.label for r in splits[split]})


class DatasetSplitOptions(TypedDict, total=False):
    """The clips the predictions must cover: one split of a custom manifest, its rows without a `split` assigned
    as the predict config's DataModule assigns them (`ecr.data.splits`, its defaults when not given). One
    definition for `ecr score` and `ecr report`, which take it as flat options (`--manifest M --split val`)."""

    manifest: Path | None
    """Custom JSONL/CSV manifest of the dataset: every prediction must be a clip of its `split` with the
    manifest's label, and every clip of that split must have a prediction."""
    split: Literal["train", "val", "test"]
    """The manifest's split the predictions cover: test (default) | val | train."""
    val_fraction: float
    """As the predict config's data.val_fraction (assigns manifest rows without a split; default: the same)."""
    test_fraction: float
    """As the predict config's data.test_fraction (assigns manifest rows without a split; default: the same)."""
    split_seed: int
    """As the predict config's data.seed (assigns manifest rows without a split; default: the same)."""


def dataset_split(label_set: LabelSet, **options: Unpack[DatasetSplitOptions]) -> DatasetSplit | None:
    """The manifest split the predictions must cover (`read_split`), or None without a manifest."""
    manifest = options.get("manifest")
    if manifest is None:
        return None
    return read_split(
        manifest,
        label_set,
        options.get("split", "test"),
        val_fraction=options.get("val_fraction", DEFAULT_VAL_FRACTION),
        test_fraction=options.get("test_fraction", DEFAULT_TEST_FRACTION),
        seed=options.get("split_seed", DEFAULT_SPLIT_SEED),
    )


__all__ = ["DatasetSplit", "DatasetSplitOptions", "dataset_split", "read_split"]
