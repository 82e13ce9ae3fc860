"""Map-style clip dataset, the default collator, and the DataLoader that accounts for failed clips.

Decoding happens in `ClipDataset.__getitem__`, i.e. inside DataLoader workers. A clip that fails with a
`ClipError` does not crash the worker: the dataset returns a `ClipFailure` marker, the collate wrapper builds
the batch from the remaining items and carries the markers along, and `ClipDataLoader` (in the main process)
either raises the original `ClipError` (`on_error="raise"`) or counts the skipped clips and reports them when
the epoch's iteration ends (`on_error="skip"`). The task collator (SFT, GRPO, verifier, ...) only ever sees
good `ClipSample`s, and the batches a model receives are exactly what the task collator returned.

`ClipDataLoader` is also "stateful" in Lightning's sense (`state_dict`/`load_state_dict`): the fit loop saves
its position in the current pass into checkpoints and restores it on resume, and with an `EpochSampler` the
resumed pass continues with exactly the batches the interrupted one had not yet handed out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from ecr.data.cache import ClipCache
from ecr.data.decode import decode_clip
from ecr.data.sampler import EpochSampler
from ecr.data.types import ClipRecord, ClipSample, DecodedClip
from ecr.errors import ClipError
from ecr.labels import LabelSet

OnError = Literal["skip", "raise"]
Collator = Callable[[list[ClipSample]], Any]


@dataclass(frozen=True)
class ClipFailure:
    """Marker a worker returns instead of a sample whose clip could not be decoded."""

    index: int
    id: str
    path: str
    reason: str
    detail: str
    source: str = ""

    def to_error(self) -> ClipError:
        return ClipError(
            self.path, self.reason, self.detail + (f" (manifest row {self.source})" if self.source else "")
        )


class ClipDataset(Dataset):
    """Decodes `records[i]` on access (through the optional on-disk cache) into a `ClipSample`.

    `decode_count` / `cache_hits` count what this process did (per worker when workers are used).
    """

    def __init__(
        self,
        records: Sequence[ClipRecord],
        label_set: LabelSet,
        *,
        num_frames: int = 8,
        sample_rate: int = 16000,
        cache: ClipCache | None = None,
    ) -> None:
        self.records = list(records)
        self.label_set = label_set
        self.num_frames = num_frames
        self.sample_rate = sample_rate
        self.cache = cache
        self.decode_count = 0
        self.cache_hits = 0

    def __len__(self) -> int:
        return len(self.records)

    def decode(self, record: ClipRecord) -> DecodedClip:
        """Decoded clip of a record, from the cache when it holds an entry for these exact settings."""
        key = self.cache.key(record, num_frames=self.num_frames, sample_rate=self.sample_rate) if self.cache else None
        if key is not None:
            hit = self.cache.load(key)  # type: ignore[union-attr]
            if hit is not None:
                self.cache_hits += 1
                return hit
        clip = decode_clip(
            record.video,
            num_frames=self.num_frames,
            start=record.start,
            end=record.end,
            sample_rate=self.sample_rate,
            audio_path=record.audio,
        )
        self.decode_count += 1
        if key is not None:
            self.cache.save(key, clip)  # type: ignore[union-attr]
        return clip

    def __getitem__(self, index: int) -> ClipSample | ClipFailure:
        record = self.records[index]
        try:
            clip = self.decode(record)
        except ClipError as err:
            return ClipFailure(index, record.id, err.path, err.reason, err.detail, record.source)
        return ClipSample(
            id=record.id,
            label=record.label,
            label_id=self.label_set.index(record.label, where=record.source or record.id),
            explanation=record.explanation,
            frames=clip.frames,
            frame_times=clip.frame_times,
            audio=clip.audio,
            sample_rate=clip.sample_rate,
            duration=clip.duration,
        )


def _stack_or_list(items: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    return torch.stack(items) if len({tuple(t.shape) for t in items}) == 1 else items


def default_collate(samples: list[ClipSample]) -> dict[str, Any]:
    """Batch of ClipSamples as a dict.

    frames: uint8 [B, T, 3, H, W] (a list when sizes differ), frame_times: float64 [B, T], audio: list of
    float32 [S_i] with `audio_lengths` int64 [B] (lengths can differ by a few samples), label_ids: int64 [B],
    ids/labels/explanations: lists, sample_rate: int, durations: float64 [B].
    """
    return {
        "ids": [s["id"] for s in samples],
        "labels": [s["label"] for s in samples],
        "label_ids": torch.tensor([s["label_id"] for s in samples], dtype=torch.long),
        "explanations": [s["explanation"] for s in samples],
        "frames": _stack_or_list([s["frames"] for s in samples]),
        "frame_times": _stack_or_list([s["frame_times"] for s in samples]),
        "audio": [s["audio"] for s in samples],
        "audio_lengths": torch.tensor([s["audio"].numel() for s in samples], dtype=torch.long),
        "sample_rate": samples[0]["sample_rate"],
        "durations": torch.tensor([s["duration"] for s in samples], dtype=torch.float64),
    }


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

    def __call__(self, items: list[ClipSample | ClipFailure]) -> CollatedBatch:
        good = [it for it in items if not isinstance(it, ClipFailure)]
        bad = [it for it in items if isinstance(it, ClipFailure)]
        return CollatedBatch(self.collate_fn(good) if good else None, bad)


FailureReporter = Callable[[list[ClipFailure], int], None]


class ClipDataLoader(DataLoader):
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
        collate = kwargs.pop("collate_fn", None) or default_collate
        if not isinstance(collate, FailureAwareCollate):
            collate = FailureAwareCollate(collate)
        super().__init__(dataset, *args, collate_fn=collate, **kwargs)
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.on_error = on_error
        self.reporter = reporter
        self._epoch = 0  # epoch of the current (or last) pass
        self._position = 0  # batches of that pass taken from the sampler up to the last one handed out
        self._resume: tuple[int, int] | None = None  # (epoch, batches) to skip, from load_state_dict

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        # A generator: nothing runs until the first next(), i.e. after Lightning's set_epoch for this epoch.
        self._epoch = int(getattr(self.sampler, "epoch", 0))
        offset = 0
        if self._resume is not None and self._resume[0] == self._epoch:
            offset = self._resume[1]
            self.sampler.skip_next(offset * self.batch_size)  # type: ignore[attr-defined, operator]
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
            "num_samples": len(self.sampler),  # type: ignore[arg-type]
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume the pass described by `state` on the next iteration over the same epoch."""
        batches = int(state.get("batches", 0))
        if batches == 0 or batches >= len(self):  # nothing taken yet, or a complete pass: start afresh
            return
        here = {"batch_size": int(self.batch_size or 0), "num_samples": len(self.sampler)}  # type: ignore[arg-type]
        saved = {k: state.get(k) for k in here}
        if not isinstance(self.sampler, EpochSampler) or saved != here:
            rank_zero_warn(
                f"ClipDataLoader: cannot resume mid-epoch (saved {saved} after {batches} batches, now {here} "
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
