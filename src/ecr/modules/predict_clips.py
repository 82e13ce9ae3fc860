"""Which truth a predicted clip has and which clips a rank counts in `ecr test`'s metrics.

A clip's compound truth comes from its manifest record's `labels` (`record_labels`); a padding sampler gives some
clips to several ranks, and each is counted once, on the lowest rank that has it (`owned_ids`, over the ids each
rank's loader yields: `loader_ids`). A module of its own: these are facts about records and samplers, not about
generation (`ecr.modules.predict`, which re-exports the public names).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ecr.data.types import ClipRecord
from ecr.errors import LabelError, ManifestError
from ecr.labels import LabelSet

_LABEL_SEPARATORS = re.compile(r"[,;|]")


def record_labels(record: ClipRecord, label_set: LabelSet) -> list[str] | None:
    """A clip's compound truth: its record's `labels` (a list, or a string split on `,;|`) made canonical.

    None when the record has no `labels`. Raises ManifestError naming the record's `file:line` for anything
    else than a non-empty list of labels of the set.
    """
    raw = (record.meta or {}).get("labels")
    if raw is None:
        return None
    where = record.source or f"clip {record.id}"
    items = _LABEL_SEPARATORS.split(raw) if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not all(isinstance(x, str) for x in items):
        raise ManifestError(f"{where}: field 'labels' must be a list of labels, got {raw!r}")
    items = [x for x in items if x.strip()]
    if not items:
        raise ManifestError(f"{where}: field 'labels' is empty (leave it out for a single-label clip)")
    try:
        canonical = [label_set.canonical(x, where=f"{where}: field 'labels'") for x in items]
    except LabelError as err:
        raise ManifestError(str(err)) from err
    return list(dict.fromkeys(canonical))  # each label once, in the given order


def owned_ids(per_rank: Sequence[Sequence[str]], rank: int) -> set[str]:
    """Clip ids rank `rank` counts in the metrics: its ids that no lower rank has (a padding sampler repeats clips
    on several ranks; the writer keeps the lowest rank's row, so the metrics count that one)."""
    lower = {cid for r in range(rank) for cid in per_rank[r]}
    return {cid for cid in per_rank[rank] if cid not in lower}


def loader_ids(loaders: Any) -> list[str]:
    """Clip ids, in order, that this rank's test loader yields (its sampler's indices into the records)."""
    loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
    records = getattr(getattr(loader, "dataset", None), "records", None)
    sampler = getattr(loader, "sampler", None)
    if records is None or sampler is None:
        raise RuntimeError("ecr test on several devices needs a loader over ClipRecords (`dataset.records`)")
    return [str(records[i].id) for i in sampler]


__all__ = ["loader_ids", "owned_ids", "record_labels"]
