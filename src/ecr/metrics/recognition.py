"""Recognition metrics: WAR, UAR, per-class recall, confusion matrix (docs/method.md §5).

Rules, stated once:
- WAR = correct clips / all clips. A clip whose answer is unparseable or names no label of the set (class id
  `NO_LABEL` = -1) counts as wrong and stays in the denominator.
- UAR = mean recall over the classes of the label set that OCCUR in the ground truth. A class with no true clip
  has no recall (None / NaN) and is left out of the mean (scikit-learn's `recall_score(average="macro",
  labels=<classes present>)`); the classes used are reported (`uar_classes`).
- The confusion matrix has one row per true class and one column per predicted class plus a last column for
  "no label", so every clip is counted exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric

NO_LABEL = -1
UAR_RULE = (
    "UAR = mean recall over the classes of the label set that occur in the ground truth; "
    "WAR = accuracy over all clips; an unparseable or off-list prediction counts as wrong"
)


def _check_ids(ids: torch.Tensor, num_classes: int, what: str, *, allow_none: bool) -> torch.Tensor:
    ids = torch.as_tensor(ids).long().flatten()
    low = NO_LABEL if allow_none else 0
    if ids.numel() and (int(ids.min()) < low or int(ids.max()) >= num_classes):
        raise ValueError(f"{what}: class ids must lie in [{low}, {num_classes}), got {ids.min()}..{ids.max()}")
    return ids


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts of (true class, predicted class): pred long [N] in [-1, K), target long [N] in [0, K) -> long [K, K+1].

    Column K counts predictions with no label (-1).
    """
    pred = _check_ids(pred, num_classes, "pred", allow_none=True)
    target = _check_ids(target, num_classes, "target", allow_none=False)
    if pred.shape != target.shape:
        raise ValueError(f"pred has {pred.numel()} clips but target has {target.numel()}")
    col = torch.where(pred == NO_LABEL, torch.full_like(pred, num_classes), pred)  # [N]
    flat = target * (num_classes + 1) + col  # [N]
    counts = torch.bincount(flat, minlength=num_classes * (num_classes + 1))  # [K·(K+1)]
    return counts.reshape(num_classes, num_classes + 1)


def recognition_scores(confusion: torch.Tensor) -> dict[str, Any]:
    """WAR, UAR and per-class recall from a confusion matrix long [K, K+1] (see the module docstring).

    Returns war, uar (floats; 0.0 with no clip), recall (float [K], NaN for classes absent from the truth),
    support (long [K] true clips per class), present (bool [K]), n (clips) and unparseable (clips with no label).
    """
    k = confusion.shape[0]
    if confusion.shape != (k, k + 1):
        raise ValueError(f"confusion must be [K, K+1], got {tuple(confusion.shape)}")
    confusion = confusion.long()
    support = confusion.sum(dim=1)  # [K]
    correct = confusion[:, :k].diagonal()  # [K]
    n = int(support.sum())
    present = support > 0  # [K]
    recall = torch.where(present, correct.double() / support.clamp(min=1).double(), torch.nan)  # [K]
    return {
        "war": float(correct.sum()) / n if n else 0.0,
        "uar": float(recall[present].mean()) if bool(present.any()) else 0.0,
        "recall": recall,
        "support": support,
        "present": present,
        "n": n,
        "unparseable": int(confusion[:, k].sum()),
    }


def class_ids(names: Sequence[str | None], labels: Sequence[str]) -> torch.Tensor:
    """Class ids long [N] of label names in `labels`' order, None -> -1 (no label); a name outside the set is a
    ValueError (callers pass validated, canonical labels)."""
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({n for n in names if n is not None and n not in index})
    if unknown:
        raise ValueError(f"labels not in the label set: {unknown}")
    return torch.tensor([NO_LABEL if n is None else index[n] for n in names], dtype=torch.long)


class RecognitionMetrics(Metric):
    """WAR, UAR, per-class recall and the confusion matrix, accumulated over batches and devices.

    `update(pred, target)`: pred long [B] (class ids, -1 = no label), target long [B]. `compute()` returns
    the tensors `war`, `uar` (scalars), `recall` [K] (NaN where a class never occurs), `confusion` [K, K+1].
    `report()` gives the same as plain Python values keyed by label name (for JSON).
    """

    confusion: torch.Tensor  # a torchmetrics state (add_state), summed over devices
    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, labels: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.labels = list(labels)
        k = len(self.labels)
        if k < 1:
            raise ValueError("RecognitionMetrics needs at least one label")
        self.add_state("confusion", default=torch.zeros(k, k + 1, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.confusion += confusion_matrix(pred.cpu(), target.cpu(), len(self.labels)).to(self.confusion.device)

    def compute(self) -> dict[str, torch.Tensor]:
        s = recognition_scores(self.confusion)
        return {
            "war": torch.tensor(s["war"]),
            "uar": torch.tensor(s["uar"]),
            "recall": s["recall"].float(),
            "confusion": self.confusion.clone(),
        }

    def report(self) -> dict[str, Any]:
        """Plain values for metrics.json: war, uar, the UAR rule, per-class recall/support, confusion matrix."""
        s = recognition_scores(self.confusion.cpu())
        present = [lbl for lbl, p in zip(self.labels, s["present"].tolist(), strict=True) if p]
        return {
            "war": s["war"],
            "uar": s["uar"],
            "uar_rule": UAR_RULE,
            "uar_classes": present,
            "n": s["n"],
            "unparseable": s["unparseable"],
            "per_class_recall": {
                lbl: (None if r != r else float(r)) for lbl, r in zip(self.labels, s["recall"].tolist(), strict=True)
            },
            "support": dict(zip(self.labels, s["support"].tolist(), strict=True)),
            "confusion": {
                "rows": "true label",
                "columns": [*self.labels, "(no label)"],
                "labels": list(self.labels),
                "matrix": self.confusion.cpu().tolist(),
            },
        }


__all__ = ["NO_LABEL", "UAR_RULE", "RecognitionMetrics", "class_ids", "confusion_matrix", "recognition_scores"]
