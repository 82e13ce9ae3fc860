"""The one split definition every command shares: train/val/test assignment of rows that carry no `split`.

`ClipDataModule`, `TextDataModule`, `ecr data check --config`, `ecr score --manifest` and `ecr report --manifest`
all assign splits with `assign_splits` and these defaults, so a manifest without a split column gives the same
test clips to `ecr predict` and to `ecr score` unless a config changes them (then pass the same values).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from ecr.errors import ConfigError

DEFAULT_VAL_FRACTION = 0.1  # share of split-less rows held out for validation
DEFAULT_TEST_FRACTION = 0.1  # share of split-less rows held out for testing
DEFAULT_SPLIT_SEED = 0


class _HasSplit(Protocol):
    @property
    def split(self) -> str | None: ...


R = TypeVar("R", bound=_HasSplit)  # ClipRecord, TextRecord: any row with an optional split


def check_fractions(val_fraction: float, test_fraction: float, where: str = "data") -> None:
    """Both fractions in [0, 1) and leaving some rows for training, else a ConfigError naming `where`."""
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ConfigError(f"{where}.val_fraction/test_fraction: {val_fraction}/{test_fraction} must be in [0, 1)")


def assign_splits(
    records: Sequence[R],
    *,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SPLIT_SEED,
) -> dict[str, list[R]]:
    """Group records by split; rows without one get a seeded random split; carve val out of train if absent.

    Deterministic: the permutation comes from a `torch.Generator` seeded with `seed` over records in manifest
    order, so the same manifest and seed give the same split on every machine.
    """
    import torch  # here, so that the defaults above import without torch (`ecr score --help`)

    out: dict[str, list[R]] = {"train": [], "val": [], "test": []}
    unassigned: list[R] = []
    for r in records:
        (out.get(r.split or "", unassigned)).append(r)
    gen = torch.Generator().manual_seed(seed)
    if unassigned:
        perm = torch.randperm(len(unassigned), generator=gen).tolist()
        n_val = int(round(val_fraction * len(unassigned)))
        n_test = int(round(test_fraction * len(unassigned)))
        for rank, i in enumerate(perm):
            split = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
            out[split].append(unassigned[i])
    elif not out["val"] and val_fraction > 0 and len(out["train"]) > 1:
        perm = torch.randperm(len(out["train"]), generator=gen).tolist()
        n_val = max(1, int(round(val_fraction * len(out["train"]))))
        held = set(perm[:n_val])
        out["val"] = [r for i, r in enumerate(out["train"]) if i in held]
        out["train"] = [r for i, r in enumerate(out["train"]) if i not in held]
    return out
