"""Raw agreement and Cohen's κ between two judges (`ecr.metrics.agreement`) against the formula by hand."""

from __future__ import annotations

import pytest
import torch

from ecr.metrics.agreement import agreement_scores, judge_agreement
from ecr.metrics.recognition import NO_LABEL

LABELS = ["happy", "sad", "neutral"]


def _table_rows() -> tuple[list[str | None], list[str | None]]:
    """A 2×2 table (a rows × b columns): happy/happy 20, happy/sad 5, sad/happy 10, sad/sad 15, plus 3 MISSING."""
    pairs = [("happy", "happy")] * 20 + [("happy", "sad")] * 5 + [("sad", "happy")] * 10 + [("sad", "sad")] * 15
    pairs += [(None, "happy"), ("sad", None), (None, None)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def test_kappa_on_a_hand_made_two_by_two_table() -> None:
    a, b = _table_rows()
    got = judge_agreement(a, b, LABELS)
    assert got["n"] == 50 and got["excluded"] == 3
    # p_o = 35/50; marginals a = (0.5, 0.5), b = (0.6, 0.4): p_e = 0.5·0.6 + 0.5·0.4 = 0.5; κ = 0.2/0.5
    assert got["agreement"] == pytest.approx(0.7)
    assert got["kappa"] == pytest.approx(0.4)
    assert got["table"] == [[20, 5, 0], [10, 15, 0], [0, 0, 0]] and got["labels"] == LABELS


def test_kappa_matches_scikit_learn_on_random_labels() -> None:
    sklearn = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-1, 3, (300,), generator=g)
    b = torch.where(torch.rand(300, generator=g) < 0.6, a, torch.randint(-1, 3, (300,), generator=g))
    got = agreement_scores(a, b, 3)
    both = (a != NO_LABEL) & (b != NO_LABEL)
    assert got["n"] == int(both.sum()) and got["excluded"] == 300 - got["n"]
    assert got["kappa"] == pytest.approx(sklearn.cohen_kappa_score(a[both].numpy(), b[both].numpy()))
    assert got["agreement"] == pytest.approx(float((a[both] == b[both]).double().mean()))


def test_kappa_is_undefined_when_chance_agreement_is_one() -> None:
    got = judge_agreement(["happy"] * 4, ["happy"] * 4, LABELS)
    assert got["agreement"] == 1.0 and got["kappa"] is None
    perfect = judge_agreement(["happy", "sad"], ["happy", "sad"], LABELS)
    assert perfect["kappa"] == pytest.approx(1.0)
    opposite = judge_agreement(["happy", "sad"], ["sad", "happy"], LABELS)
    assert opposite["agreement"] == 0.0 and opposite["kappa"] == pytest.approx(-1.0)


def test_nothing_compared_and_bad_input() -> None:
    got = judge_agreement([None, "happy"], ["sad", None], LABELS)
    assert got["n"] == 0 and got["excluded"] == 2 and got["agreement"] is None and got["kappa"] is None
    with pytest.raises(ValueError, match="not in the label set"):
        judge_agreement(["bored"], ["happy"], LABELS)
    with pytest.raises(ValueError, match="1 labels from judge a but 2"):
        judge_agreement(["happy"], ["happy", "sad"], LABELS)
