"""The one metrics assembly of `ecr score` and `ecr test`: the numbers of metrics.json from class ids.

Both commands reduce clips to class ids — the prediction ŷ, the truth y, the judge's ê (-1 = none) — plus, for
the clips that have one, the compound truth, and turn them into the same numbers here: WAR/UAR/recall/confusion
(`RecognitionMetrics`), EPC/EEA/FCR/quadrants (`ExplanationMetrics`) when there is a judge, and `compound`
(`CompoundAccuracy`) when some clip has several labels. `ecr score` updates it once with the whole file; `ecr
test` batch by batch on every rank and sums the states over ranks (`report(sync=True)`), so the two agree.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ecr.metrics.compound import CompoundAccuracy, label_mask
from ecr.metrics.explanation import ExplanationMetrics
from ecr.metrics.recognition import RecognitionMetrics, class_ids

HEADLINE = ("war", "uar", "epc", "eea", "fcr")


class ClipMetrics(nn.Module):
    """Recognition, explanation (with a judge) and compound metrics of a set of clips, over batches and ranks."""

    def __init__(self, labels: Sequence[str], *, judged: bool) -> None:
        super().__init__()
        self.labels = list(labels)
        self.recognition = RecognitionMetrics(self.labels)
        self.explanation = ExplanationMetrics() if judged else None
        self.compound = CompoundAccuracy()

    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        explained: torch.Tensor | None = None,
        compound: Sequence[Sequence[str] | None] = (),
    ) -> None:
        """pred, target, explained: long [B] class ids (-1 = none; `explained` required with a judge);
        compound: per clip its list of labels, or None for a single-label clip (empty: no clip has one)."""
        self.recognition.update(pred, target)
        if self.explanation is not None:
            if explained is None:
                raise ValueError("ClipMetrics was built with a judge: update needs the judged class ids")
            self.explanation.update(pred, explained, target)
        rows = [i for i, c in enumerate(compound) if c is not None]
        if rows:
            self.compound.update(pred[rows], label_mask([compound[i] or () for i in rows], self.labels))

    def report(self, judge: dict[str, Any] | None = None, *, sync: bool = False) -> dict[str, Any]:
        """metrics.json's numbers: `labels`, the recognition metrics, with a judge its explanation metrics, `judge`
        (its settings; None without one) and `compound` when some clip had several labels.

        sync: sum the states over DDP ranks first (every rank must call it; `ecr test`)."""
        parts = [m for m in (self.recognition, self.explanation, self.compound) if m is not None]
        with contextlib.ExitStack() as stack:
            if sync:
                for metric in parts:
                    stack.enter_context(metric.sync_context())
            out: dict[str, Any] = {"labels": list(self.labels), **self.recognition.report()}
            if self.explanation is not None:
                out.update(self.explanation.report())
            compound = self.compound.report()
        out["judge"] = judge if self.explanation is not None else None
        if compound["n"]:
            out["compound"] = compound
        return out


def headline(report: dict[str, Any]) -> dict[str, float]:
    """The scalars a run logs from a report: war, uar, epc, eea, fcr (those that exist) and compound accuracy."""
    out = {k: float(report[k]) for k in HEADLINE if report.get(k) is not None}
    if report.get("compound"):
        out["compound"] = float(report["compound"]["accuracy"])
    return out


__all__ = ["HEADLINE", "ClipMetrics", "class_ids", "headline"]
