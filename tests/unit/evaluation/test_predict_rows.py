"""The pure helpers of `ecr predict` / `ecr test`: a record's compound truth and which rank counts a repeated clip."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecr.data.types import ClipRecord
from ecr.errors import ManifestError
from ecr.labels import DFEW, MAFW
from ecr.modules.predict import owned_ids, record_labels


def record(labels: object = None) -> ClipRecord:
    meta = {} if labels is None else {"labels": labels}
    return ClipRecord(id="c", video=Path("c.mp4"), label="happy", source="m.jsonl:3", meta=meta)


def test_record_labels_are_canonical_and_errors_name_the_row() -> None:
    assert record_labels(record(), DFEW) is None  # a single-label clip
    assert record_labels(record(["Happiness", "surprised", "happy"]), DFEW) == ["happy", "surprise"]
    assert record_labels(record("anger|disgust; sad"), MAFW) == ["anger", "disgust", "sadness"]  # a CSV cell
    with pytest.raises(ManifestError, match=r"m.jsonl:3: field 'labels': 'bored' is not a label of 'dfew'"):
        record_labels(record(["happy", "bored"]), DFEW)
    with pytest.raises(ManifestError, match="m.jsonl:3: field 'labels' is empty"):
        record_labels(record([]), DFEW)
    with pytest.raises(ManifestError, match="m.jsonl:3: field 'labels' must be a list of labels"):
        record_labels(record({"happy": 1}), DFEW)


def test_a_clip_on_several_ranks_is_counted_by_the_lowest() -> None:
    # Lightning's padded test sampler: 5 clips on 2 ranks, rank 1 gets a repeat of c0
    per_rank = [["c0", "c2", "c4"], ["c1", "c3", "c0"]]
    assert owned_ids(per_rank, 0) == {"c0", "c2", "c4"}
    assert owned_ids(per_rank, 1) == {"c1", "c3"}
    assert owned_ids([["a", "b"]], 0) == {"a", "b"}
