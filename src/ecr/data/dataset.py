"""Map-style clip dataset and the default clip collator.

Decoding happens in `ClipDataset.__getitem__`, i.e. inside DataLoader workers (through the optional on-disk
cache). A clip that fails with a `ClipError` does not crash the worker: the dataset returns a `ClipFailure`
marker, which `ResumableDataLoader` (`ecr.data.loader`) drops from the batch and reports or raises in the main
process, so the task collator (SFT, GRPO, verifier, ...) only ever sees good `ClipSample`s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from ecr.data.cache import ClipCache
from ecr.data.decode import decode_clip
from ecr.data.types import ClipFailure, ClipRecord, ClipSample, DecodedClip
from ecr.errors import ClipError
from ecr.labels import LabelSet


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
        cache = self.cache
        key = cache.key(record, num_frames=self.num_frames, sample_rate=self.sample_rate) if cache else None
        if cache and key is not None:
            hit = cache.load(key)
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
        if cache and key is not None:
            cache.save(key, clip)
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
