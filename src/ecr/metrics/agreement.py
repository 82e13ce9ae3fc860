"""Agreement between two explanation judges (docs/method.md §5): raw agreement and Cohen's κ.

EPC/EEA/FCR are only as good as the judge that reads ê from the explanation; the paper validated its metric by
checking that judges of different families agree. With two judges' labels for the same clips:

- only clips BOTH judges answered count: a MISSING answer (None / class id -1) on either side excludes the clip,
  and the excluded clips are counted (`excluded`) next to the `n` that were compared;
- raw agreement p_o = share of compared clips with the same label;
- Cohen's κ = (p_o - p_e) / (1 - p_e), with p_e = Σ_k p_a(k) · p_b(k) from the two judges' marginals over the
  label set; κ is undefined (None) when p_e = 1 (both judges always give the same single label), and both are
  None when no clip was compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ecr.metrics.recognition import NO_LABEL, class_ids


def agreement_scores(a: torch.Tensor, b: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Raw agreement and κ of class ids a, b long [N] (NO_LABEL = missing): {n, excluded, agreement, kappa, table}.

    `table` is the K×K contingency table (rows = judge a, columns = judge b) of the compared clips.
    """
    if a.shape != b.shape or a.dim() != 1:
        raise ValueError(f"a and b must be 1-D of the same length, got {tuple(a.shape)} and {tuple(b.shape)}")
    both = (a != NO_LABEL) & (b != NO_LABEL)  # [N]
    a, b = a[both].long(), b[both].long()  # [M]
    n = int(a.numel())
    table = torch.zeros(num_classes * num_classes, dtype=torch.long)
    table.scatter_add_(0, a * num_classes + b, torch.ones_like(a))
    table = table.view(num_classes, num_classes)  # [K, K]
    out: dict[str, Any] = {"n": n, "excluded": int((~both).sum()), "agreement": None, "kappa": None}
    out["table"] = table.tolist()
    if n == 0:
        return out
    t = table.double() / n  # [K, K]
    p_o = float(t.diagonal().sum())
    p_e = float((t.sum(dim=1) * t.sum(dim=0)).sum())
    out["agreement"] = p_o
    out["kappa"] = None if _is_one(p_e) else (p_o - p_e) / (1 - p_e)
    return out


def _is_one(x: float) -> bool:
    """p_e == 1 up to float rounding (a marginal product of exact fractions summing to 1)."""
    return abs(1.0 - x) < 1e-12


def judge_agreement(a: Sequence[str | None], b: Sequence[str | None], labels: Sequence[str]) -> dict[str, Any]:
    """Raw agreement and Cohen's κ of two judges' labels per clip (same order; None = MISSING); see the module doc."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} labels from judge a but {len(b)} from judge b")
    out = agreement_scores(class_ids(a, labels), class_ids(b, labels), len(labels))
    return {**out, "labels": list(labels)}


__all__ = ["agreement_scores", "judge_agreement"]
