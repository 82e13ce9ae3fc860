"""The DataLoader of every `SplitDataModule` (clips and text rows): clip-failure accounting and exact resume.

A dataset may return a `ClipFailure` marker instead of a sample (a clip that could not be decoded). The collate
wrapper builds the batch from the remaining items and carries the markers along, and `ResumableDataLoader` (in
the main process) either raises the original `ClipError` (`on_error="raise"`) or counts the skipped clips and
reports them when the epoch's iteration ends (`on_error="skip"`). The batches a model receives are exactly what
the task collator returned.

`ResumableDataLoader` is also "stateful" in Lightning's sense (`state_dict`/`load_state_dict`): the fit loop
saves its position in the current pass into checkpoints and restores it on resume, and with an `EpochSampler`
the resumed pass continues with exactly the batches the interrupted one had not yet handed out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass, field
from typing import Any, Literal

from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from ecr.data.sampler import EpochSampler
from ecr.data.types import ClipFailure
from ecr.errors import ClipError

OnError = Literal["skip", "raise"]
Collator = Callable[[list[Any]], Any]


@dataclass
class CollatedBatch:
    """What a worker sends back: the task batch (None if every item failed) and the failure markers."""

    batch: Any
    failures: list[ClipFailure] = field(default_factory=list)

    def pin_memory(self) -> CollatedBatch:
        from torch.utils.data._utils.pin_memory import pin_memory

        return CollatedBatch(pin_memory(self.batch) if self.batch is not None else None, self.failures)


class FailureAwareCollate:
    """Wraps a task collator: drops `ClipFailure` markers, collates the rest, returns a `CollatedBatch`."""

    def __init__(self, collate_fn: Collator) -> None:
        self.collate_fn = collate_fn

    def __call__(self, items: list[Any]) -> CollatedBatch:
        good = [it for it in items if not isinstance(it, ClipFailure)]
        bad = [it for it in items if isinstance(it, ClipFailure)]
        return CollatedBatch(self.collate_fn(good) if good else None, bad)


FailureReporter = Callable[[list[ClipFailure], int], None]


class ResumableDataLoader(DataLoader):
    """DataLoader that unwraps `CollatedBatch`es and applies the clip error policy in the main process.

    With `on_error="raise"` the first failed clip raises its `ClipError` (the real type, also from worker
    processes); with "skip" the failed clips are dropped, and at the end of each pass `reporter(failures,
    num_batches)` is called. A pass in which every clip failed raises anyway: there is nothing to train on.

    `state_dict()` is the position in the current pass: its epoch (the sampler's) and the number of batches
    taken from the sampler up to the last batch handed out. `load_state_dict()` makes the next pass over that
    same epoch skip those batches (needs an `EpochSampler`; a complete pass or another epoch starts afresh).
    Clips skipped before the interruption are not re-reported by the resumed pass.
    """

    def __init__(
        self,
        dataset: Dataset,
        *args: Any,
        on_error: OnError = "skip",
        reporter: FailureReporter | None = None,
        **kwargs: Any,
    ) -> None:
        collate = kwargs.pop("collate_fn", None)
        if collate is None:
            raise ValueError("ResumableDataLoader needs a collate_fn (the DataModule's task collator)")
        if not isinstance(collate, FailureAwareCollate):
            collate = FailureAwareCollate(collate)
        kwargs["collate_fn"] = collate
        super().__init__(dataset, *args, **kwargs)
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.on_error = on_error
        self.reporter = reporter
        self._epoch = 0  # epoch of the current (or last) pass
        self._position = 0  # batches of that pass taken from the sampler up to the last one handed out
        self._resume: tuple[int, int] | None = None  # (epoch, batches) to skip, from load_state_dict

    # A generator, not torch's `_BaseDataLoaderIter`: Lightning only iterates it (a deliberate override).
    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        # A generator: nothing runs until the first next(), i.e. after Lightning's set_epoch for this epoch.
        self._epoch = int(getattr(self.sampler, "epoch", 0))
        offset = 0
        sampler = self.sampler  # load_state_dict resumes only an EpochSampler with a batch size
        if self._resume is not None and self._resume[0] == self._epoch and isinstance(sampler, EpochSampler):
            offset = self._resume[1]
            sampler.skip_next(offset * (self.batch_size or 0))
        self._resume = None
        self._position = offset
        failures: list[ClipFailure] = []
        batches = received = 0
        expected = len(self) - offset  # Lightning stops after len() batches without exhausting the iterator
        reported = False
        for item in super().__iter__():
            received += 1
            if not isinstance(item, CollatedBatch):  # a foreign collate_fn was swapped in
                batches += 1
                self._position = offset + received
                yield item
                continue
            if item.failures and self.on_error == "raise":
                raise item.failures[0].to_error()
            failures.extend(item.failures)
            if item.batch is not None:
                batches += 1
            if received == expected:  # the pass is complete: report before handing out its last batch
                self._end_of_pass(failures, batches)
                reported = True
            if item.batch is not None:
                self._position = offset + received
                yield item.batch
        self._position = offset + received
        if not reported:
            self._end_of_pass(failures, batches)

    def state_dict(self) -> dict[str, int]:
        """Position in the current pass (saved into checkpoints by Lightning's fit loop)."""
        return {
            "epoch": self._epoch,
            "batches": self._position,
            "batch_size": int(self.batch_size or 0),
            "num_samples": self._num_samples(),
        }

    def _num_samples(self) -> int:
        """Indices the sampler gives per pass (0 for a sampler without a length)."""
        return len(self.sampler) if isinstance(self.sampler, Sized) else 0

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume the pass described by `state` on the next iteration over the same epoch."""
        batches = int(state.get("batches", 0))
        if batches == 0 or batches >= len(self):  # nothing taken yet, or a complete pass: start afresh
            return
        here = {"batch_size": int(self.batch_size or 0), "num_samples": self._num_samples()}
        saved = {k: state.get(k) for k in here}
        if not isinstance(self.sampler, EpochSampler) or not self.batch_size or saved != here:
            rank_zero_warn(
                f"ResumableDataLoader: cannot resume mid-epoch (saved {saved} after {batches} batches, now {here} "
                f"with a {type(self.sampler).__name__}); epoch {state.get('epoch')} restarts from its start"
            )
            return
        self._resume = (int(state["epoch"]), batches)

    def _end_of_pass(self, failures: list[ClipFailure], batches: int) -> None:
        if failures and batches == 0:
            first = failures[0]
            raise ClipError(
                first.path,
                first.reason,
                f"{first.detail} — and all {len(failures)} clips of this pass failed",
            )
        if self.reporter is not None:
            self.reporter(failures, batches)
