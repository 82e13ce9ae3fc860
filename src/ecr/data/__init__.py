"""Data: manifests, synchronized A/V decoding, the ClipDataModule, the synthetic dataset.

Importing `ecr.data` is cheap: torchcodec and Lightning load on first use of the objects that need them.
"""

from __future__ import annotations

from ecr.data.decode import decode_clip
from ecr.data.synth import synthesize
from ecr.data.types import ClipRecord, ClipSample, DecodedClip

__all__ = ["ClipRecord", "ClipSample", "DecodedClip", "decode_clip", "synthesize"]
