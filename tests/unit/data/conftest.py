"""Real media fixtures for the data tests (files written by ffmpeg; see `ecr.fixtures.index_clips`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecr.fixtures.index_clips import make_index_clip


@pytest.fixture(scope="session")
def index_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """3 s, 10 fps index clips: .mp4 (H.264/AAC), .avi (MPEG-4/PCM), .mkv (H.264/AAC)."""
    d = tmp_path_factory.mktemp("index_clips")
    return {ext: make_index_clip(d / f"index{ext}") for ext in (".mp4", ".avi", ".mkv")}


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16-clip synthetic DFEW-labelled dataset (real .mp4/.avi files + manifest.jsonl)."""
    from ecr.fixtures.synth import synthesize

    d = tmp_path_factory.mktemp("synth")
    synthesize(d, num_clips=16, labels="dfew", seed=0, inconsistent_fraction=0.25)
    return d
