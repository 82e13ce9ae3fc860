"""ClipDataModule options that cannot work fail at construction with a `ConfigError` naming the `data.*` field
(predict_split, labels and on_error: test_datamodule.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecr.data import ClipDataModule
from ecr.errors import ConfigError


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"format": "avi", "manifest": "m.jsonl"}, "data.format"),
        ({"format": "emer", "labels": "dfew"}, "data.manifest"),
        ({"manifest": "m.jsonl", "labels": "dfew", "num_frames": 0}, "num_frames"),
        ({"manifest": "m.jsonl", "labels": "dfew", "sample_rate": 0}, "sample_rate"),
    ],
)
def test_an_option_that_cannot_work_names_its_field(tmp_path: Path, options: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        ClipDataModule(root=tmp_path, **options)
