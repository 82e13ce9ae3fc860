"""The account of one `ecr label` run: what was read, labelled, missing, augmented and written, and its text.

Filled by every step of `ecr.teachers.label` (reading, labelling, balancing), saved as `<output>.summary.json`
and printed by `format_report`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class LabelReport:
    """Counts of one labelling run (what was read, labelled, missing and written)."""

    rows_read: int = 0
    rows_skipped: dict[str, int] = field(default_factory=dict)
    texts: int = 0
    sentences: int = 0
    unique_sentences: int = 0
    labelled: int = 0
    missing: dict[str, int] = field(default_factory=dict)
    augmented: int = 0
    augment_missing: dict[str, int] = field(default_factory=dict)
    written: int = 0
    distribution: dict[str, int] = field(default_factory=dict)
    distribution_after_balance: dict[str, int] = field(default_factory=dict)
    teacher: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def format_report(report: LabelReport) -> str:
    """The summary `ecr label` prints: counts, missing answers, augmentation and the label distribution."""
    lines = [
        f"rows read {report.rows_read} (skipped {report.rows_skipped or 0}); texts {report.texts}; "
        f"sentences {report.sentences} ({report.unique_sentences} unique)",
        f"labelled {report.labelled}; missing {sum(report.missing.values())} {report.missing or ''}".rstrip(),
        f"augmented {report.augmented}"
        + (f" (paraphrase failures {report.augment_missing})" if report.augment_missing else ""),
        f"written {report.written}",
        "label distribution:",
    ]
    dist = report.distribution_after_balance or report.distribution
    total = sum(dist.values()) or 1
    for label, n in dist.items():
        before = report.distribution.get(label, 0)
        lines.append(
            f"  {label:<16} {n:6d}  {100 * n / total:5.1f}%"
            + (f"  (before balancing {before})" if report.distribution_after_balance else "")
        )
    return "\n".join(lines)
