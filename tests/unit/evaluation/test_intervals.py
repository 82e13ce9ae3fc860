"""Bootstrap intervals, the paired bootstrap and the exact McNemar test (`ecr.metrics.intervals`), by hand."""

from __future__ import annotations

import math

import pytest
import torch

from ecr.metrics.explanation import explanation_scores, quadrant_counts
from ecr.metrics.intervals import (
    ClipOutcomes,
    _p_value,
    bootstrap_interval,
    mcnemar_exact,
    paired_bootstrap,
    percentile_interval,
    point_metrics,
    resampled_metrics,
)
from ecr.metrics.recognition import NO_LABEL, confusion_matrix, recognition_scores


def _half_right(n: int, num_classes: int = 2) -> ClipOutcomes:
    """n clips of class 0, the first half predicted right, the rest wrong (WAR = 0.5)."""
    target = torch.zeros(n, dtype=torch.long)
    pred = torch.where(torch.arange(n) < n // 2, 0, 1)
    return ClipOutcomes(pred, target, num_classes)


def _random(n: int, k: int = 5, seed: int = 1) -> ClipOutcomes:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, k, (n,), generator=g)
    pred = torch.randint(-1, k, (n,), generator=g)  # -1 = unparseable
    exp = torch.randint(-1, k, (n,), generator=g)  # -1 = missing judge answer
    return ClipOutcomes(pred, target, k, exp, ids=[f"c{i}" for i in range(n)])


def test_all_correct_gives_one_one() -> None:
    target = torch.tensor([0, 1, 2, 1, 0])
    clips = ClipOutcomes(target.clone(), target, 3, target.clone())
    iv = bootstrap_interval(clips, n_resamples=200)
    for key in ("war", "uar", "epc", "eea", "fcr"):
        assert iv[key] == [1.0, 1.0], key
    assert iv["n_resamples"] == 200 and iv["confidence"] == 0.95 and iv["seed"] == 0


def test_half_right_interval_contains_half_and_shrinks_with_n() -> None:
    small = bootstrap_interval(_half_right(20), n_resamples=2000)["war"]
    large = bootstrap_interval(_half_right(2000), n_resamples=2000)["war"]
    assert small[0] < 0.5 < small[1] and large[0] < 0.5 < large[1]
    assert large[1] - large[0] < (small[1] - small[0]) / 5  # width ~ 1/sqrt(n): 100x the clips, ~10x narrower
    # normal approximation: 95 % half-width 1.96 * sqrt(0.25 / n)
    assert (large[1] - large[0]) / 2 == pytest.approx(1.96 * math.sqrt(0.25 / 2000), rel=0.15)


def test_resampled_metrics_match_the_score_functions_row_by_row() -> None:
    clips = _random(60)
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, 60, (7, 60), generator=g)  # [R, N]
    got = resampled_metrics(clips, idx)
    for r in range(7):
        sel = idx[r]
        rec = recognition_scores(confusion_matrix(clips.pred[sel], clips.target[sel], 5))
        exp = explanation_scores(**quadrant_counts(clips.pred[sel], clips.explanation[sel], clips.target[sel]))
        assert float(got["war"][r]) == pytest.approx(rec["war"]) and float(got["uar"][r]) == pytest.approx(rec["uar"])
        for key in ("epc", "eea", "fcr"):
            assert float(got[key][r]) == pytest.approx(exp[key]), key
    point = point_metrics(clips)
    rec = recognition_scores(confusion_matrix(clips.pred, clips.target, 5))
    assert point["war"] == pytest.approx(rec["war"]) and point["uar"] == pytest.approx(rec["uar"])


def test_uar_runs_over_the_classes_present_in_the_resample() -> None:
    # class 0: 2 clips, both right; class 1: 2 clips, both wrong
    clips = ClipOutcomes(torch.tensor([0, 0, 0, 0]), torch.tensor([0, 0, 1, 1]), 3)
    got = resampled_metrics(clips, torch.tensor([[0, 1, 0, 1], [0, 2, 2, 3], [2, 3, 3, 2]]))
    assert got["uar"].tolist() == [1.0, 0.5, 0.0]  # only class 0 / both / only class 1
    assert got["war"].tolist() == [1.0, 0.25, 0.0]


def test_explanation_metrics_run_over_the_judged_clips_of_the_resample() -> None:
    target = torch.tensor([0, 1, 1])
    exp = torch.tensor([0, NO_LABEL, 0])  # clip 1 missing
    clips = ClipOutcomes(torch.tensor([0, 1, 0]), target, 2, exp)
    got = resampled_metrics(clips, torch.tensor([[1, 1, 1], [0, 1, 2], [2, 2, 1]]))
    assert torch.isnan(got["epc"][0]) and torch.isnan(got["fcr"][0])  # no judged clip
    assert got["eea"][1].item() == pytest.approx(0.5) and got["fcr"][1].item() == pytest.approx(0.5)
    assert got["epc"][1].item() == pytest.approx(1.0)  # clip 0: 0 = 0; clip 2: pred 0 = ê 0
    assert got["eea"][2].item() == 0.0 and got["epc"][2].item() == 1.0
    none_judged = ClipOutcomes(target, target, 2, torch.full((3,), NO_LABEL))
    iv = bootstrap_interval(none_judged, n_resamples=50)
    assert iv["epc"] is None and iv["war"] == [1.0, 1.0]


def test_determinism_with_the_seed() -> None:
    clips = _random(300)
    a = bootstrap_interval(clips, n_resamples=300, seed=7)
    assert a == bootstrap_interval(clips, n_resamples=300, seed=7)
    assert a["war"] != bootstrap_interval(clips, n_resamples=300, seed=8)["war"]
    assert set(a) == {"war", "uar", "epc", "eea", "fcr", "n_resamples", "confidence", "seed"}
    assert set(bootstrap_interval(ClipOutcomes(clips.pred, clips.target, 5), n_resamples=10)) == {
        "war",
        "uar",
        "n_resamples",
        "confidence",
        "seed",
    }


def test_chunked_resampling_matches_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    from ecr.metrics import intervals

    clips = _random(50)
    whole = bootstrap_interval(clips, n_resamples=40, seed=2)
    monkeypatch.setattr(intervals, "_CHUNK_ELEMENTS", 50 * 7)  # 7 resamples per chunk
    chunked = bootstrap_interval(clips, n_resamples=40, seed=2)
    assert chunked == whole  # the CPU generator's stream does not depend on how the draws are split


def test_percentile_interval_and_p_value_by_hand() -> None:
    samples = torch.arange(101, dtype=torch.float64)  # 0..100
    assert percentile_interval(samples, 0.95) == pytest.approx([2.5, 97.5])
    assert percentile_interval(torch.tensor([float("nan")])) is None
    d = torch.tensor([-1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    assert _p_value(3.0, d) == pytest.approx(2 * (2 + 1) / (10 + 1))  # two resamples at or below 0, +1 corrected
    assert _p_value(-3.0, d) == pytest.approx(1.0)  # 9/10 at or above 0 -> 1.8, clipped
    assert _p_value(0.0, d) == 1.0


def test_bad_settings_are_errors() -> None:
    with pytest.raises(ValueError, match="at least one clip"):
        bootstrap_interval(ClipOutcomes(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 2))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval(_half_right(4), confidence=1.5)
    with pytest.raises(ValueError, match="same length"):
        ClipOutcomes(torch.zeros(3, dtype=torch.long), torch.zeros(2, dtype=torch.long), 2)


# ---------------------------------------------------------------------------------------------- paired tests


def test_same_file_against_itself_has_delta_zero_and_p_one() -> None:
    clips = _random(200)
    cmp = paired_bootstrap(clips, clips, n_resamples=300)
    assert set(cmp["metrics"]) == {"war", "uar", "epc", "eea", "fcr"}
    for key, entry in cmp["metrics"].items():
        assert entry["delta"] == 0.0 and entry["p_value"] == 1.0 and entry["interval"] == [0.0, 0.0], key
        assert entry["a"] == entry["b"]
    assert cmp["mcnemar"] == {"a_only": 0, "b_only": 0, "discordant": 0, "p_value": 1.0}
    assert cmp["n"] == 200 and cmp["n_resamples"] == 300


def test_a_clearly_better_file_has_a_positive_interval_and_small_p() -> None:
    a = _half_right(400)
    b = ClipOutcomes(torch.where(torch.arange(400) < 360, 0, 1), a.target, 2)  # 90 % right
    cmp = paired_bootstrap(a, b, n_resamples=500)
    war = cmp["metrics"]["war"]
    assert war["delta"] == pytest.approx(0.4) and war["interval"][0] > 0.3 and war["p_value"] == pytest.approx(2 / 501)
    assert cmp["mcnemar"]["a_only"] == 0 and cmp["mcnemar"]["b_only"] == 160
    assert cmp["mcnemar"]["p_value"] == pytest.approx(2 / 2**160)


def test_paired_matches_ids_whatever_the_order() -> None:
    a = _random(80, seed=4)
    b = _random(80, seed=5)
    b = ClipOutcomes(b.pred, a.target, 5, b.explanation, ids=a.ids)
    perm = torch.randperm(80, generator=torch.Generator().manual_seed(0))
    direct = paired_bootstrap(a, b, n_resamples=100, seed=3)
    shuffled = paired_bootstrap(a, b.take(perm), n_resamples=100, seed=3)
    assert direct == shuffled
    assert direct["metrics"]["war"]["delta"] == pytest.approx(point_metrics(b)["war"] - point_metrics(a)["war"])


def test_an_id_mismatch_is_a_clear_error() -> None:
    a = _random(10)
    b = ClipOutcomes(a.pred, a.target, 5, a.explanation, ids=[*a.ids[:9], "zz"])
    with pytest.raises(ValueError, match=r"1 only in the first \(e.g. \['c9'\]\), 1 only in the second"):
        paired_bootstrap(a, b)
    c = ClipOutcomes(a.pred, (a.target + 1) % 5, 5, a.explanation, ids=a.ids)
    with pytest.raises(ValueError, match="different ground truth"):
        paired_bootstrap(a, c)


def test_without_resamples_only_deltas_and_mcnemar() -> None:
    a, b = _half_right(10), ClipOutcomes(torch.zeros(10, dtype=torch.long), torch.zeros(10, dtype=torch.long), 2)
    cmp = paired_bootstrap(a, b, n_resamples=0)
    assert cmp["metrics"]["war"] == {"a": 0.5, "b": 1.0, "delta": 0.5, "interval": None, "p_value": None}
    assert "epc" not in cmp["metrics"] and cmp["mcnemar"]["b_only"] == 5


def test_mcnemar_against_a_hand_computed_binomial() -> None:
    # a right on clips 0..3, b right on 0 and 4..8: a only = 3 (1, 2, 3), b only = 5 (4..8), n = 8
    a_right = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=torch.bool)
    b_right = torch.tensor([1, 0, 0, 0, 1, 1, 1, 1, 1, 0], dtype=torch.bool)
    got = mcnemar_exact(a_right, b_right)
    # P(X <= 3), X ~ Bin(8, 1/2) = (1 + 8 + 28 + 56) / 256 = 93 / 256; two-sided = 186 / 256
    assert got == {"a_only": 3, "b_only": 5, "discordant": 8, "p_value": pytest.approx(186 / 256)}
    even = mcnemar_exact(torch.tensor([True, False]), torch.tensor([False, True]))
    assert even["p_value"] == 1.0  # 2 · P(X <= 1 | n = 2) = 2 · 3/4, clipped
    one_sided = mcnemar_exact(torch.zeros(6, dtype=torch.bool), torch.ones(6, dtype=torch.bool))
    assert one_sided["p_value"] == pytest.approx(2 / 64)
