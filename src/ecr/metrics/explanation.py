"""Explanation metrics EPC, EEA, FCR and the consistency quadrants (docs/method.md §5), and the verifier judge's rule.

With ŷ the predicted label, y the truth and ê the label a judge reads in the explanation (the think text):
- EPC = P(ŷ = ê), EEA = P(ê = y), FCR = P(ŷ = y ∧ ê = y);
- the probabilities are over the clips the judge answered. A clip whose ê is MISSING (class id -1: a failed or
  off-list judge reply, no think text, ...) is excluded from all three and counted in `missing`, which is
  reported beside them. It is never turned into a label (the official code mapped it to neutral);
- an unparseable prediction (ŷ = -1) is a judged clip whose prediction is wrong and disagrees with ê;
- quadrants: judged clips by (prediction right / wrong) × (explanation right / wrong); index 0 = right.

The verifier judge (`explanation_label`), offline default of `ecr score`: the think text is read by the reward's
`ecr.models.sentence_reader.SentenceReader` (same splitter, sentence cap, mapping, τ and `decide` rule), so each
read sentence gets the verifier's label set exactly as the reward sees it. Then
1. no think block -> MISSING ("no_think"); a think block with no sentence -> MISSING ("no_sentences");
2. a sentence is neutral iff its label set is exactly {neutral}; if every sentence is neutral, ê = neutral
   (MISSING "no_task_label" when the task has no label mapped to the verifier's neutral);
3. otherwise every non-neutral sentence votes once for each task label whose verifier class is in its set
   (neutral excluded); ê = the label with the most votes, ties broken by the larger summed probability of the
   voting sentences, then by label-set order;
4. non-neutral sentences whose classes map to no task label (e.g. GoEmotions "admiration") cast no vote; if no
   label gets a vote, ê is MISSING ("unmapped").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchmetrics import Metric

from ecr.labels import NEUTRAL
from ecr.metrics.recognition import NO_LABEL
from ecr.models.sentence_reader import HasReader, SentenceLabels, SentenceReader, reader_of
from ecr.teachers.base import Missing

# ----------------------------------------------------------------------------------------------- the maths


def quadrant_counts(pred: torch.Tensor, explanation: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Counts of one batch. pred, explanation, target: long [N] class ids (-1 = none) ->

    quadrants long [2, 2] over judged clips (row 0 = ŷ = y, column 0 = ê = y), consistent long [] (judged clips
    with ŷ = ê) and missing long [] (clips with ê = -1).
    """
    pred, explanation, target = (torch.as_tensor(t).long().flatten() for t in (pred, explanation, target))
    if not pred.shape == explanation.shape == target.shape:
        raise ValueError(f"pred/explanation/target sizes differ: {pred.numel()}/{explanation.numel()}/{target.numel()}")
    judged = explanation != NO_LABEL  # [N]
    pred_wrong = (pred != target).long()  # [N]
    expl_wrong = (explanation != target).long()  # [N]
    cell = (pred_wrong * 2 + expl_wrong)[judged]  # [J] in 0..3
    quadrants = torch.bincount(cell, minlength=4).reshape(2, 2)
    consistent = ((pred == explanation) & judged & (pred != NO_LABEL)).sum()
    return {"quadrants": quadrants, "consistent": consistent, "missing": (~judged).sum()}


def explanation_scores(quadrants: torch.Tensor, consistent: int | torch.Tensor, missing: int | torch.Tensor) -> dict:
    """EPC, EEA, FCR (floats; None when no clip was judged), judged and missing counts, from the counts above."""
    q = quadrants.long()
    judged = int(q.sum())
    rate = (lambda x: float(x) / judged) if judged else (lambda x: None)  # noqa: E731
    return {
        "epc": rate(consistent),
        "eea": rate(q[0, 0] + q[1, 0]),
        "fcr": rate(q[0, 0]),
        "judged": judged,
        "missing": int(missing),
    }


class ExplanationMetrics(Metric):
    """EPC, EEA, FCR, the quadrants and the missing count, accumulated over batches and devices.

    `update(pred, explanation, target)`: long [B] class ids each; -1 = unparseable prediction / MISSING judge
    answer. `compute()` returns tensors epc, eea, fcr (NaN when nothing was judged), judged, missing and
    quadrants [2, 2]; `report()` the same as plain values.
    """

    quadrants: torch.Tensor  # a torchmetrics state (add_state), summed over devices
    consistent: torch.Tensor  # a torchmetrics state (add_state), summed over devices
    missing: torch.Tensor  # a torchmetrics state (add_state), summed over devices
    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("quadrants", default=torch.zeros(2, 2, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("consistent", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("missing", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, explanation: torch.Tensor, target: torch.Tensor) -> None:
        c = quadrant_counts(pred.cpu(), explanation.cpu(), target.cpu())
        self.quadrants += c["quadrants"].to(self.quadrants.device)
        self.consistent += c["consistent"].to(self.consistent.device)
        self.missing += c["missing"].to(self.missing.device)

    def compute(self) -> dict[str, torch.Tensor]:
        s = explanation_scores(self.quadrants, self.consistent, self.missing)
        nan = float("nan")
        return {
            **{k: torch.tensor(nan if s[k] is None else s[k]) for k in ("epc", "eea", "fcr")},
            "judged": torch.tensor(s["judged"]),
            "missing": self.missing.clone(),
            "quadrants": self.quadrants.clone(),
        }

    def report(self) -> dict[str, Any]:
        """Plain values for metrics.json: epc, eea, fcr, judged, missing and the named quadrants."""
        s = explanation_scores(self.quadrants.cpu(), self.consistent.cpu(), self.missing.cpu())
        q = self.quadrants.cpu().tolist()
        s["quadrants"] = {
            "prediction_right/explanation_right": q[0][0],
            "prediction_right/explanation_wrong": q[0][1],
            "prediction_wrong/explanation_right": q[1][0],
            "prediction_wrong/explanation_wrong": q[1][1],
        }
        return s


# ----------------------------------------------------------------------------------------------- verifier judge


def sentence_labels(
    source: SentenceReader | HasReader, completions: Sequence[str]
) -> list[list[SentenceLabels] | None]:
    """The verifier's label set of every read think sentence of each completion (None: no think block).

    `source` is a `SentenceReader` or a reward reading through one, so the judge reads the explanations exactly
    as the reward does (splitter, τ, label cap, de-duplication, sentence cap; one batched verifier call).
    """
    return reader_of(source).sentence_labels(completions)


def verifier_mapping(source: SentenceReader | HasReader) -> dict[str, str]:
    """Task label -> verifier class name of a configured reader or reward (what `explanation_label` needs)."""
    return reader_of(source).class_mapping()


def explanation_label(
    sentences: Sequence[Mapping[str, Any]] | None,
    mapping: Mapping[str, str],
    labels: Sequence[str],
    *,
    neutral: str = NEUTRAL,
) -> str | Missing:
    """The verifier judge's ê from a think text's sentence label sets (rule in the module docstring).

    sentences: `SentenceLabels`-like dicts (`labels`: verifier class -> p), None when there is no think block;
    mapping: task label -> verifier class; labels: the task's label set in order (tie-break).
    """
    if sentences is None:
        return Missing("no_think")
    if not sentences:
        return Missing("no_sentences")
    by_class: dict[str, list[str]] = {}
    for task_label in labels:
        if task_label in mapping:
            by_class.setdefault(mapping[task_label], []).append(task_label)
    votes: dict[str, int] = {}
    mass: dict[str, float] = {}
    all_neutral = True
    for sentence in sentences:
        chosen = dict(sentence["labels"])
        if set(chosen) == {neutral}:
            continue
        all_neutral = False
        for cls, p in chosen.items():
            if cls == neutral:
                continue
            for task_label in by_class.get(cls, []):
                votes[task_label] = votes.get(task_label, 0) + 1
                mass[task_label] = mass.get(task_label, 0.0) + float(p)
    if all_neutral:
        neutral_labels = by_class.get(neutral, [])
        return neutral_labels[0] if neutral_labels else Missing("no_task_label")
    if not votes:
        return Missing("unmapped")
    order = {lbl: i for i, lbl in enumerate(labels)}
    return max(votes, key=lambda lbl: (votes[lbl], mass[lbl], -order[lbl]))


__all__ = [
    "ExplanationMetrics",
    "SentenceLabels",
    "explanation_label",
    "explanation_scores",
    "quadrant_counts",
    "sentence_labels",
    "verifier_mapping",
]
