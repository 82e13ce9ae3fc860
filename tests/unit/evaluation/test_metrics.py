"""WAR/UAR against scikit-learn, EPC/EEA/FCR on hand-made rows, the verifier judge's aggregation rule."""

from __future__ import annotations

import math

import pytest
import torch

from ecr.labels import DFEW_LABELS
from ecr.metrics import (
    ExplanationMetrics,
    RecognitionMetrics,
    confusion_matrix,
    explanation_label,
    quadrant_counts,
    recognition_scores,
)
from ecr.teachers.base import Missing

K = len(DFEW_LABELS)


def _random_predictions(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random truth without class 4 (absent from the ground truth), predictions with ~15 % unparseable (-1)."""
    g = torch.Generator().manual_seed(seed)
    present = torch.tensor([0, 1, 2, 3, 5, 6])
    target = present[torch.randint(0, len(present), (n,), generator=g)]
    pred = torch.randint(0, K, (n,), generator=g)
    pred = torch.where(torch.rand(n, generator=g) < 0.15, torch.full_like(pred, -1), pred)
    return pred, target


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_war_uar_match_scikit_learn(seed: int) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    pred, target = _random_predictions(300, seed)
    m = RecognitionMetrics(DFEW_LABELS)
    for chunk in range(0, 300, 64):  # batched updates sum to the same counts
        m.update(pred[chunk : chunk + 64], target[chunk : chunk + 64])
    out = m.compute()
    war = metrics.accuracy_score(target.numpy(), pred.numpy())
    present = sorted(set(target.tolist()))
    uar = metrics.recall_score(target.numpy(), pred.numpy(), labels=present, average="macro", zero_division=0)
    assert float(out["war"]) == pytest.approx(war, abs=1e-6)
    assert float(out["uar"]) == pytest.approx(uar, abs=1e-6)
    per = metrics.recall_score(target.numpy(), pred.numpy(), labels=present, average=None, zero_division=0)
    assert out["recall"][present].tolist() == pytest.approx(per.tolist(), abs=1e-6)
    assert math.isnan(float(out["recall"][4]))  # surprise never occurs in the truth: no recall, not 0
    cm = metrics.confusion_matrix(target.numpy(), pred.numpy(), labels=[*range(K), -1])
    assert out["confusion"].tolist() == cm[:K].tolist()  # rows = truth, last column = no label


def test_recognition_by_hand_and_report() -> None:
    labels = ("happy", "sad", "angry")
    pred = torch.tensor([0, 0, -1, 1, 2, 0])
    target = torch.tensor([0, 0, 0, 1, 1, 0])
    m = RecognitionMetrics(labels)
    m.update(pred, target)
    rep = m.report()
    # happy: 3/4, sad: 1/2, angry absent -> UAR = (0.75 + 0.5) / 2; WAR = 4/6 (the unparseable clip counts wrong)
    assert rep["war"] == pytest.approx(4 / 6)
    assert rep["uar"] == pytest.approx(0.625)
    assert rep["uar_classes"] == ["happy", "sad"]
    assert rep["per_class_recall"] == {"happy": 0.75, "sad": 0.5, "angry": None}
    assert rep["support"] == {"happy": 4, "sad": 2, "angry": 0}
    assert rep["unparseable"] == 1 and rep["n"] == 6
    assert rep["confusion"]["matrix"] == [[3, 0, 0, 1], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert "occur in the ground truth" in rep["uar_rule"]


def test_recognition_edge_cases() -> None:
    empty = recognition_scores(torch.zeros(3, 4, dtype=torch.long))
    assert empty["war"] == 0.0 and empty["uar"] == 0.0 and empty["n"] == 0
    with pytest.raises(ValueError, match="class ids"):
        confusion_matrix(torch.tensor([3]), torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="class ids"):
        confusion_matrix(torch.tensor([0]), torch.tensor([-1]), 3)
    with pytest.raises(ValueError, match="clips"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 3)


def test_explanation_metrics_on_hand_made_rows() -> None:
    # (ŷ, ê, y): ê = -1 is a MISSING judge answer, ŷ = -1 an unparseable prediction
    rows = [
        (0, 0, 0),  # right / right, consistent
        (0, 1, 0),  # right / wrong
        (1, 0, 0),  # wrong / right
        (1, 1, 0),  # wrong / wrong, but consistent (ŷ = ê)
        (2, 1, 0),  # wrong / wrong, inconsistent
        (-1, 0, 0),  # unparseable: wrong / right, inconsistent
        (0, -1, 0),  # missing: excluded
        (1, -1, 1),  # missing: excluded
    ]
    pred, expl, target = (torch.tensor(c) for c in zip(*rows, strict=True))
    m = ExplanationMetrics()
    m.update(pred[:4], expl[:4], target[:4])
    m.update(pred[4:], expl[4:], target[4:])
    rep = m.report()
    assert rep["judged"] == 6 and rep["missing"] == 2
    assert rep["epc"] == pytest.approx(2 / 6)  # rows 0 and 3
    assert rep["eea"] == pytest.approx(3 / 6)  # rows 0, 2, 5
    assert rep["fcr"] == pytest.approx(1 / 6)  # row 0
    assert rep["quadrants"] == {
        "prediction_right/explanation_right": 1,
        "prediction_right/explanation_wrong": 1,
        "prediction_wrong/explanation_right": 2,
        "prediction_wrong/explanation_wrong": 2,
    }
    out = m.compute()
    assert float(out["fcr"]) == pytest.approx(1 / 6) and int(out["missing"]) == 2


def test_nothing_judged_gives_none_not_zero() -> None:
    c = quadrant_counts(torch.tensor([0, 1]), torch.tensor([-1, -1]), torch.tensor([0, 1]))
    assert int(c["missing"]) == 2 and int(c["quadrants"].sum()) == 0
    m = ExplanationMetrics()
    m.update(torch.tensor([0]), torch.tensor([-1]), torch.tensor([0]))
    rep = m.report()
    assert rep["epc"] is None and rep["eea"] is None and rep["fcr"] is None and rep["missing"] == 1
    assert math.isnan(float(m.compute()["epc"]))


IDENTITY = {lbl: lbl for lbl in DFEW_LABELS}


def s(**labels: float) -> dict:
    return {"text": "x", "labels": labels}


def test_explanation_label_rule() -> None:
    lbls = DFEW_LABELS
    assert explanation_label(None, IDENTITY, lbls) == Missing("no_think")
    assert explanation_label([], IDENTITY, lbls) == Missing("no_sentences")
    # neutral iff every sentence is neutral
    assert explanation_label([s(neutral=0.9), s(neutral=0.8)], IDENTITY, lbls) == "neutral"
    # neutral sentences are ignored as soon as one sentence is emotional
    assert explanation_label([s(neutral=0.9), s(neutral=0.9), s(sad=0.3)], IDENTITY, lbls) == "sad"
    # most votes among non-neutral sentences; {neutral, X} votes for X
    assert explanation_label([s(happy=0.2), s(happy=0.3, neutral=0.5), s(sad=0.9)], IDENTITY, lbls) == "happy"
    # a tie in votes goes to the larger summed probability, then to label-set order
    assert explanation_label([s(happy=0.2), s(sad=0.9)], IDENTITY, lbls) == "sad"
    assert explanation_label([s(sad=0.5), s(happy=0.5)], IDENTITY, lbls) == "happy"
    # a two-label sentence votes for both
    assert explanation_label([s(angry=0.6, disgust=0.7), s(disgust=0.2)], IDENTITY, lbls) == "disgust"


def test_explanation_label_through_a_goemotions_mapping() -> None:
    mapping = {"happy": "joy", "sad": "sadness", "neutral": "neutral", "angry": "anger"}
    lbls = ("happy", "sad", "neutral", "angry")
    assert explanation_label([s(joy=0.8), s(admiration=0.9)], mapping, lbls) == "happy"
    assert explanation_label([s(admiration=0.9), s(neutral=0.9)], mapping, lbls) == Missing("unmapped")
    no_neutral = {"happy": "joy"}
    assert explanation_label([s(neutral=0.9)], no_neutral, ("happy",)) == Missing("no_task_label")
