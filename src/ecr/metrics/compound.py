"""Compound (multi-label) ground truth: accuracy where a prediction is right when it is ANY of the clip's labels.

MAFW annotates clips with compound emotions (several labels per clip) beside the single-label sets; a custom
manifest may give a clip `labels: [..]` too (docs/method.md §5). The rule:
- only clips that carry a list of labels count (`n`); a clip with just one `label` is not a compound clip;
- a prediction is right iff it is one of the clip's labels; an unparseable prediction (class id -1) is wrong;
- it is reported separately from the single-label WAR/UAR (`compound` in metrics.json), never mixed into them.

The state is two counts reduced with `dist_reduce_fx="sum"`, so the numbers are the same on one device and
across DDP ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric

from ecr.metrics.recognition import NO_LABEL

COMPOUND_RULE = (
    "compound accuracy = share of the clips with a list of labels whose prediction is one of them "
    "(an unparseable prediction is wrong); reported apart from the single-label WAR/UAR"
)


def label_mask(label_lists: Sequence[Sequence[str]], labels: Sequence[str]) -> torch.Tensor:
    """Multi-hot truth bool [N, K] of N clips' label lists over the label set `labels` (K classes).

    Raises:
        ValueError: a label is not in `labels`, or a clip's list is empty.
    """
    index = {label: i for i, label in enumerate(labels)}
    mask = torch.zeros(len(label_lists), len(labels), dtype=torch.bool)
    for row, names in enumerate(label_lists):
        if not names:
            raise ValueError(f"clip {row}: an empty list of labels")
        unknown = sorted({n for n in names if n not in index})
        if unknown:
            raise ValueError(f"clip {row}: labels not in the label set: {unknown}")
        mask[row, [index[n] for n in names]] = True
    return mask


def compound_hits(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Whether each prediction is one of its clip's labels: pred long [N] (-1 = none), truth bool [N, K] -> bool [N]."""
    pred = torch.as_tensor(pred).long().flatten()
    if truth.dim() != 2 or truth.shape[0] != pred.shape[0]:
        raise ValueError(f"truth must be [N, K] with N = {pred.shape[0]}, got {tuple(truth.shape)}")
    if pred.numel() and int(pred.max()) >= truth.shape[1]:
        raise ValueError(f"pred: class ids must lie in [-1, {truth.shape[1]}), got max {int(pred.max())}")
    has = pred != NO_LABEL  # [N]
    picked = truth.gather(1, pred.clamp(min=0).unsqueeze(1)).squeeze(1)  # [N]
    return picked & has


def compound_scores(correct: int | torch.Tensor, n: int | torch.Tensor) -> dict[str, Any]:
    """{accuracy (None without a compound clip), correct, n, rule} from the two counts."""
    correct, n = int(correct), int(n)
    return {"accuracy": correct / n if n else None, "correct": correct, "n": n, "rule": COMPOUND_RULE}


class CompoundAccuracy(Metric):
    """Compound accuracy over batches and devices: `update(pred long [B], truth bool [B, K])` (compound clips only)."""

    correct: torch.Tensor  # a torchmetrics state (add_state), summed over devices
    n: torch.Tensor  # a torchmetrics state (add_state), summed over devices
    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("n", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, truth: torch.Tensor) -> None:
        hits = compound_hits(pred.cpu(), truth.cpu())
        self.correct += hits.sum().to(self.correct.device)
        self.n += torch.tensor(hits.numel(), device=self.n.device)

    def compute(self) -> torch.Tensor:
        """Accuracy as a tensor (NaN without a compound clip)."""
        n = int(self.n)
        return self.correct.double() / n if n else torch.tensor(float("nan"))

    def report(self) -> dict[str, Any]:
        """Plain values for metrics.json (`compound_scores`)."""
        return compound_scores(self.correct.cpu(), self.n.cpu())


__all__ = ["COMPOUND_RULE", "CompoundAccuracy", "compound_hits", "compound_scores", "label_mask"]
