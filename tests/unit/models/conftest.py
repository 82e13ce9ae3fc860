"""Fixtures of the model tests: one tiny Omni folder, one tiny text LM and a few decoded synthetic clips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ecr.data import decode_clip
from ecr.fixtures import synthesize
from ecr.fixtures.tiny_models import build_tiny_causal_lm, build_tiny_omni
from ecr.labels import get_label_set


@pytest.fixture(scope="session")
def tiny_omni(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_omni(tmp_path_factory.mktemp("tiny_omni"), hidden_size=64)


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"), hidden_size=64)


@pytest.fixture(scope="session")
def clip_samples(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Four decoded synthetic clips (real .mp4/.avi files) as ClipSample dicts, 4 frames each."""
    root = tmp_path_factory.mktemp("synth")
    manifest = synthesize(root, num_clips=4, labels="dfew", seed=1, size=64, duration=2.0, avi_fraction=0.25)
    labels = get_label_set("dfew")
    return [_sample(root, json.loads(line), labels, num_frames=4) for line in manifest.read_text().splitlines()]


@pytest.fixture(scope="session")
def long_clip_samples(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Clips of 5 s and 3 s (several 2 s audio-in-video chunks), 8 frames each, plus the [1, 4) s window of the
    5 s clip (id suffix `-window`): same duration as the 3 s clip, cut from the middle of its container."""
    labels = get_label_set("dfew")
    samples = []
    for duration in (5.0, 3.0):
        root = tmp_path_factory.mktemp(f"synth_{duration:g}s")
        manifest = synthesize(root, num_clips=1, labels="dfew", seed=2, size=64, duration=duration, avi_fraction=0)
        samples.append(_sample(root, json.loads(manifest.read_text().splitlines()[0]), labels, num_frames=8))
        if duration == 5.0:
            row = json.loads(manifest.read_text().splitlines()[0])
            window = _sample(root, row, labels, num_frames=8, start=1.0, end=4.0)
            samples.append(dict(window, id=f"{row['id']}-window"))
    return samples  # [5 s, 5 s window [1, 4), 3 s]


def _sample(root: Path, row: dict, labels, *, num_frames: int, start=None, end=None) -> dict:
    """A manifest row decoded into the ClipSample dict the collators take."""
    clip = decode_clip(root / row["video"], num_frames=num_frames, start=start, end=end)
    return {
        "id": row["id"],
        "label": row["label"],
        "label_id": labels.index(row["label"]),
        "explanation": row["explanation"],
        "frames": clip.frames,
        "frame_times": clip.frame_times,
        "audio": clip.audio,
        "sample_rate": clip.sample_rate,
        "duration": clip.duration,
    }


SMALL_INPUTS = {"min_pixels": 56 * 56, "max_pixels": 56 * 56}


@pytest.fixture
def small_inputs() -> dict:
    return dict(SMALL_INPUTS)


@pytest.fixture
def text_samples() -> list[dict]:
    return [
        {
            "id": "t0",
            "text": "I can't stop smiling today!",
            "label": "happy",
            "explanation": "The speaker is smiling.",
        },
        {
            "id": "t1",
            "text": "Leave me alone.",
            "label": "angry",
            "explanation": "The words are curt and hostile.",
        },
    ]


torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
