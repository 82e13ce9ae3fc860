"""`ecr data check --config <stage>.yaml`: the stage's own data needs (`ecr.data.requirements`) as check results.

Clip configs: the rows a stage reads without a field it needs become bad rows (reason `no_explanation` for
SFT), split exactly as the stage splits them (`ecr.data.splits`). ERV configs (`SentenceDataModule`): the
labelled-sentence file is read and validated and the per-label support printed; a label without any sentence
is an error, since the distilled verifier could never predict it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ecr.data.requirements import (
    NEEDS_EXPLANATIONS,
    explanation_rows,
    format_support,
    label_support,
    rows_without_explanation,
    unsupported_labels,
)
from ecr.data.splits import DEFAULT_SPLIT_SEED, DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION, assign_splits

if TYPE_CHECKING:
    from ecr.data.check import CheckProblem
    from ecr.data.types import ClipRecord


def is_sentence_data(data: Mapping[str, Any] | None) -> bool:
    """Whether a config's `data:` section is the ERV stage's `SentenceDataModule`."""
    return bool(data) and str((data or {}).get("class_path", "")).rsplit(".", 1)[-1] == "SentenceDataModule"


def stage_problems(stage: str | None, records: Sequence[ClipRecord], args: Mapping[str, Any]) -> list[CheckProblem]:
    """Bad rows for what `stage` needs beyond decoding (`args`: the data section's init args, for the split)."""
    from ecr.data.check import CheckProblem  # check.py imports this module

    if stage not in NEEDS_EXPLANATIONS:
        return []
    splits = assign_splits(
        records,
        val_fraction=float(args.get("val_fraction", DEFAULT_VAL_FRACTION)),
        test_fraction=float(args.get("test_fraction", DEFAULT_TEST_FRACTION)),
        seed=int(args.get("seed", DEFAULT_SPLIT_SEED)),
    )
    return [
        CheckProblem(r.source, r.id, str(r.video), "no_explanation", f"{stage.upper()} trains on explanations")
        for r in rows_without_explanation(explanation_rows(splits))
    ]


def check_sentences(data: Mapping[str, Any], model: Mapping[str, Any] | None = None) -> int:
    """Validate an ERV config's labelled sentences and print the per-label support; 1 if a label has none."""
    from ecr.data.sentences import read_sentence_rows
    from ecr.labels import LabelSet, resolve_label_space

    args = dict(data.get("init_args") or {})
    if not args.get("path"):
        print("ecr data check: error: the ERV data section has no path", file=sys.stderr)
        return 2
    names = resolve_label_space(args.get("labels", "dfew"))
    rows = read_sentence_rows(args["path"], LabelSet("verifier", tuple(names)))
    if args.get("val_path"):
        rows += read_sentence_rows(args["val_path"], LabelSet("verifier", tuple(names)))
    support = label_support((r["labels"] for r in rows), names)
    print(f"ecr data check: {len(rows)} labelled sentences in {args['path']} (labels {list(names)})")
    print(f"sentences per label: {format_support(support)}")
    if missing := unsupported_labels(support):
        print(
            f"ecr data check: label(s) {missing} have no sentence: the verifier could never predict them; "
            "map the teacher's emotions onto them (`ecr label --emotion_map`) or add sentences",
            file=sys.stderr,
        )
        return 1
    print(f"all {len(rows)} sentences are usable")
    return 0
