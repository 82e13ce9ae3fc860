"""The training sampler: an index order that is a pure function of (seed, epoch), resumable mid-epoch.

Lightning calls `set_epoch(epoch)` on a loader's sampler at the start of every epoch (`_set_sampler_epoch` in
the fit loop looks at `loader.sampler` and `loader.batch_sampler.sampler`), so the order of epoch `e` is the
same in an uninterrupted run and in one resumed from a checkpoint. Under DDP Lightning leaves samplers that
already are `DistributedSampler`s alone, so this sampler is one and shards by (num_replicas, rank) itself,
shuffling with the DataModule's seed (a plain `DistributedSampler` does exactly this; single-process training
is the num_replicas=1 case).

Mid-epoch resume: `ResumableDataLoader.state_dict()` records how many batches of the epoch were handed out; on
load it asks the sampler to drop that many batches' worth of indices from the front of the same epoch's order
(`skip_next`), so the rest of the interrupted epoch is exactly what the uninterrupted run saw.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Sized
from typing import TYPE_CHECKING, Any, cast

import torch
from torch.utils.data import DistributedSampler

if TYPE_CHECKING:
    from lightning.pytorch import Trainer
    from torch.utils.data import Dataset


def trainer_shard(trainer: Trainer | None) -> tuple[int, int]:
    """(number of processes, this process's rank) of the Trainer's run; (1, 0) without a Trainer."""
    return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)


class EpochSampler(DistributedSampler):
    """This rank's share of a dataset, in an order fixed by (seed, epoch); optionally skips a prefix once.

    Args:
        dataset: anything with `len()`.
        shuffle: permute with `torch.Generator().manual_seed(seed + epoch)` (else dataset order).
        seed: shuffling seed (the same on every rank).
        num_replicas: the process group's size (1 without DDP).
        rank: this process's rank in it (0 without DDP).
    """

    def __init__(self, dataset: Sized, *, shuffle: bool, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        # torch annotates a Dataset, but the sampler only takes its len()
        super().__init__(
            cast("Dataset[Any]", dataset), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed
        )
        self._skip = 0

    @classmethod
    def for_trainer(cls, dataset: Sized, trainer: Trainer | None, *, shuffle: bool, seed: int) -> EpochSampler:
        """Sharded over the Trainer's processes (Lightning keeps DistributedSamplers as they are and calls
        their `set_epoch`); one shard without a Trainer."""
        world, rank = trainer_shard(trainer)
        return cls(dataset, shuffle=shuffle, seed=seed, num_replicas=world, rank=rank)

    def skip_next(self, count: int) -> None:
        """Make the next pass start after its first `count` indices (used once, then cleared)."""
        if count < 0:
            raise ValueError(f"skip count must be >= 0, got {count}")
        self._skip = count

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())  # [num_samples]: this rank's share of epoch `self.epoch`
        skip, self._skip = self._skip, 0
        return iter(indices[skip:])


class WeightedEpochSampler(EpochSampler):
    """Indices drawn with replacement by `weights`, the draw a pure function of (seed, epoch): like
    `WeightedRandomSampler`, but resumable (same order after a restart, `skip_next` mid-epoch) and sharded.

    Args:
        weights: one non-negative weight per dataset row (not all zero).
        seed: as for `EpochSampler`.
        num_replicas: as for `EpochSampler`.
        rank: as for `EpochSampler`.
    """

    def __init__(self, weights: Sequence[float], *, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(range(len(weights)), shuffle=True, seed=seed, num_replicas=num_replicas, rank=rank)
        self.weights = torch.as_tensor(list(weights), dtype=torch.double)
        if self.weights.numel() == 0 or bool((self.weights < 0).any()) or float(self.weights.sum()) <= 0:
            raise ValueError("WeightedEpochSampler needs non-negative weights, not all zero")

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, self.total_size, replacement=True, generator=g).tolist()
        indices = drawn[self.rank : self.total_size : self.num_replicas]
        skip, self._skip = self._skip, 0
        return iter(indices[skip:])
