"""Plain data types shared by the data pipeline and the stages that consume it.

A `ClipRecord` is one manifest row (what to decode); a `DecodedClip` is what `decode_clip` returns; a
`ClipSample` is what `ClipDataModule` datasets yield and what every task collator (SFT, GRPO, verifier,
evaluation) receives as a list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import torch

from ecr.errors import ClipError


@dataclass(frozen=True)
class ClipRecord:
    """One clip of a dataset: a video file (+ optional separate audio file and time window) and its label."""

    id: str
    video: Path
    label: str
    audio: Path | None = None
    start: float | None = None
    end: float | None = None
    explanation: str | None = None
    split: str | None = None
    source: str = ""  # "file:line" of the manifest row, for error messages
    # extra manifest columns (e.g. the synthetic set's `explanation_consistent`), kept for analysis
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass
class DecodedClip:
    """Synchronised frames and audio of one time window of a clip."""

    frames: torch.Tensor  # uint8 [T, 3, H, W]
    frame_times: torch.Tensor  # float64 [T], presentation time (s) of each returned frame
    audio: torch.Tensor  # float32 [S], mono at `sample_rate`, covering [start, end)
    sample_rate: int
    duration: float  # seconds of the decoded window
    start: float = 0.0  # window start (s) in the container's timeline


class ClipSample(TypedDict):
    """One item of a ClipDataModule dataset (what collators receive a list of)."""

    id: str
    label: str  # canonical label of the active label set
    label_id: int  # 0-based index into the label set
    explanation: str | None
    frames: torch.Tensor  # uint8 [T, 3, H, W]
    frame_times: torch.Tensor  # float64 [T]
    audio: torch.Tensor  # float32 [S]
    sample_rate: int
    duration: float


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
