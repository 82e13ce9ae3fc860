"""Data: manifests, synchronized A/V decoding, the ClipDataModule, text rows, the synthetic dataset."""

from __future__ import annotations

from ecr.data.cache import ClipCache
from ecr.data.datamodule import ClipDataModule, assign_splits
from ecr.data.dataset import ClipDataLoader, ClipDataset, ClipFailure, default_collate
from ecr.data.decode import decode_clip
from ecr.data.manifests import (
    read_custom_manifest,
    read_dataset,
    read_dfew,
    read_emer,
    read_mafw,
    read_mafw_xlsx,
)
from ecr.data.sampler import EpochSampler
from ecr.data.synth import synthesize, write_text_manifest
from ecr.data.text import TextDataModule, TextRecord, TextSample, read_text_manifest
from ecr.data.types import ClipRecord, ClipSample, DecodedClip

__all__ = [
    "ClipCache",
    "ClipDataLoader",
    "ClipDataModule",
    "ClipDataset",
    "ClipFailure",
    "ClipRecord",
    "ClipSample",
    "DecodedClip",
    "EpochSampler",
    "TextDataModule",
    "TextRecord",
    "TextSample",
    "assign_splits",
    "decode_clip",
    "default_collate",
    "read_custom_manifest",
    "read_dataset",
    "read_dfew",
    "read_emer",
    "read_mafw",
    "read_mafw_xlsx",
    "read_text_manifest",
    "synthesize",
    "write_text_manifest",
]
