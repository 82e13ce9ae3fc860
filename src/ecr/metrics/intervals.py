"""Bootstrap intervals and paired tests for the headline metrics of `ecr score` (docs/method.md §5).

Test sets are a few thousand clips, so a difference of one or two points in WAR or FCR can be noise. These
functions say how much:

- `bootstrap_interval`: a percentile bootstrap over clips for WAR, UAR and (with a judge) EPC, EEA, FCR. Each
  resample draws N clip indices with replacement and recomputes every metric from the resampled per-clip values
  with the rules of `recognition.py` / `explanation.py`: UAR is the mean recall over the classes PRESENT IN THAT
  RESAMPLE, the explanation metrics run over the judged clips of the resample (a resample with no judged clip
  gives NaN and is left out of the percentiles).
- `paired_bootstrap`: two prediction files on the same clips (matched by id). The same resampled indices are
  applied to both, so the per-metric difference b - a gets a percentile interval and a two-sided bootstrap
  p-value: 2 × the share of resampled differences on the other side of 0 from the observed one (or at 0),
  clipped to 1; an observed difference of exactly 0 has p = 1.
- `mcnemar_exact`: the exact McNemar test for WAR on the discordant pairs (clips right in one file only),
  a two-sided binomial test with p = 1/2, computed exactly with `math.comb`.

Everything is pure torch on CPU with a seeded `torch.Generator`: the same seed gives the same intervals.
Class id -1 (`NO_LABEL`) is an unparseable prediction or a missing judge answer, as elsewhere in `ecr.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ecr.metrics.recognition import NO_LABEL

RECOGNITION_KEYS = ("war", "uar")
EXPLANATION_KEYS = ("epc", "eea", "fcr")
# Resampled index entries per chunk: bounds memory ([chunk, N] long tensors) while staying vectorised.
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class ClipOutcomes:
    """The per-clip class ids of one predictions file: what a bootstrap resamples.

    pred: long [N], predicted class id (NO_LABEL = unparseable); target: long [N], true class id (no NO_LABEL);
    explanation: long [N] judged class id ê (NO_LABEL = MISSING), None when no judge ran; ids: clip ids
    (needed by `paired_bootstrap` to match two files), None when unknown.
    """

    pred: torch.Tensor
    target: torch.Tensor
    num_classes: int
    explanation: torch.Tensor | None = None
    ids: Sequence[str] | None = None

    def __post_init__(self) -> None:
        n = self.target.shape[0]
        if self.pred.shape != (n,) or (self.explanation is not None and self.explanation.shape != (n,)):
            raise ValueError("pred, target and explanation must all be 1-D tensors of the same length")
        if self.ids is not None and len(self.ids) != n:
            raise ValueError(f"{len(self.ids)} ids for {n} clips")
        if n and (int(self.target.min()) < 0 or int(self.target.max()) >= self.num_classes):
            raise ValueError(f"target ids must lie in [0, {self.num_classes})")

    @property
    def keys(self) -> tuple[str, ...]:
        """The metrics this file has: WAR/UAR, plus EPC/EEA/FCR with a judge."""
        return RECOGNITION_KEYS + (EXPLANATION_KEYS if self.explanation is not None else ())

    def take(self, order: torch.Tensor) -> ClipOutcomes:
        """The same clips reordered by `order` (long [N])."""
        ids = None if self.ids is None else [self.ids[i] for i in order.tolist()]
        exp = None if self.explanation is None else self.explanation[order]
        return ClipOutcomes(self.pred[order], self.target[order], self.num_classes, exp, ids)


def resampled_metrics(clips: ClipOutcomes, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every metric of `clips.keys` on each row of clip indices idx long [R, M] -> double [R] per metric.

    Rows are independent resamples; NaN where a metric is undefined on a row (no judged clip).
    """
    pred = clips.pred.long()[idx]  # [R, M]
    target = clips.target.long()[idx]  # [R, M]
    hit = pred == target  # [R, M]
    r = idx.shape[0]
    support = torch.zeros(r, clips.num_classes, dtype=torch.float64)  # [R, K]
    support.scatter_add_(1, target, torch.ones_like(target, dtype=torch.float64))
    correct = torch.zeros_like(support).scatter_add_(1, target, hit.double())  # [R, K]
    present = support > 0  # [R, K]
    recall = torch.where(present, correct / support.clamp(min=1), 0.0)  # [R, K]
    out = {
        "war": hit.double().mean(dim=1),  # [R]
        "uar": recall.sum(dim=1) / present.sum(dim=1).double(),  # [R]
    }
    if clips.explanation is not None:
        exp = clips.explanation.long()[idx]  # [R, M]
        judged = exp != NO_LABEL  # [R, M]
        count = judged.sum(dim=1).double()  # [R]
        count = torch.where(count > 0, count, torch.nan)  # NaN -> metric NaN on rows with no judged clip
        right = (exp == target) & judged  # [R, M]
        out["epc"] = ((pred == exp) & judged).sum(dim=1) / count
        out["eea"] = right.sum(dim=1) / count
        out["fcr"] = (right & hit).sum(dim=1) / count
    return out


def point_metrics(clips: ClipOutcomes) -> dict[str, float | None]:
    """The metrics on all clips once (the same numbers as `ecr score`); None where undefined."""
    n = clips.target.shape[0]
    values = resampled_metrics(clips, torch.arange(n)[None])
    return {k: (None if math.isnan(float(v[0])) else float(v[0])) for k, v in values.items()}


def _check_settings(n: int, n_resamples: int, confidence: float) -> None:
    if n == 0:
        raise ValueError("a bootstrap needs at least one clip")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def _resample(clips: Sequence[ClipOutcomes], n_resamples: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Per file, each metric on the same `n_resamples` bootstrap resamples of the clips -> double [R] each."""
    n = clips[0].target.shape[0]
    gen = torch.Generator().manual_seed(seed)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    parts: list[list[dict[str, torch.Tensor]]] = [[] for _ in clips]
    for start in range(0, n_resamples, chunk):
        idx = torch.randint(0, n, (min(chunk, n_resamples - start), n), generator=gen)  # [C, N]
        for part, c in zip(parts, clips, strict=True):
            part.append(resampled_metrics(c, idx))
    return [{k: torch.cat([p[k] for p in part]) for k in part[0]} for part in parts]


def percentile_interval(samples: torch.Tensor, confidence: float = 0.95) -> list[float] | None:
    """[lo, hi], the central `confidence` percentile interval of samples double [R] (NaN left out); None if none."""
    finite = samples[~torch.isnan(samples)].double()  # [R']
    if finite.numel() == 0:
        return None
    alpha = (1 - confidence) / 2
    q = torch.quantile(finite, torch.tensor([alpha, 1 - alpha], dtype=torch.float64))  # [2], linear interpolation
    return [float(q[0]), float(q[1])]


def bootstrap_interval(
    clips: ClipOutcomes, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Percentile bootstrap intervals over clips: {war: [lo, hi], uar, (epc, eea, fcr), n_resamples, confidence, seed}.

    A metric with no defined resample (no judged clip at all) gets None.
    """
    _check_settings(clips.target.shape[0], n_resamples, confidence)
    (samples,) = _resample([clips], n_resamples, seed)
    out: dict[str, Any] = {k: percentile_interval(samples[k], confidence) for k in clips.keys}
    return {**out, "n_resamples": n_resamples, "confidence": confidence, "seed": seed}


def align(a: ClipOutcomes, b: ClipOutcomes) -> ClipOutcomes:
    """b reordered to a's clip order, after checking both hold the same clip ids with the same ground truth."""
    if a.ids is None or b.ids is None:
        if a.target.shape != b.target.shape or not torch.equal(a.target, b.target):
            raise ValueError("without ids, the two files must list the same clips with the same truth in order")
        return b
    ids_a, ids_b = list(a.ids), list(b.ids)
    for name, ids in (("first", ids_a), ("second", ids_b)):
        if len(set(ids)) != len(ids):
            raise ValueError(f"the {name} predictions file has duplicate clip ids")
    if set(ids_a) != set(ids_b):
        only_a = sorted(set(ids_a) - set(ids_b))
        only_b = sorted(set(ids_b) - set(ids_a))
        raise ValueError(
            "the two predictions files do not hold the same clips: "
            f"{len(only_a)} only in the first (e.g. {only_a[:3]}), {len(only_b)} only in the second (e.g. {only_b[:3]})"
        )
    where = {clip: i for i, clip in enumerate(ids_b)}
    b = b.take(torch.tensor([where[clip] for clip in ids_a], dtype=torch.long))
    if b.num_classes != a.num_classes:
        raise ValueError(f"label sets differ: {a.num_classes} vs {b.num_classes} classes")
    bad = (a.target != b.target).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"{len(bad)} clips have a different ground truth in the two files (e.g. {ids_a[bad[0]]!r})")
    return b


def mcnemar_exact(a_right: torch.Tensor, b_right: torch.Tensor) -> dict[str, Any]:
    """Exact two-sided McNemar test on bool [N] per-clip correctness of two files on the same clips.

    With n01 = clips right in a only and n10 = right in b only, under H0 each discordant clip is right in b with
    probability 1/2: p = min(1, 2 · Σ_{i ≤ min(n01, n10)} C(n, i) / 2^n), n = n01 + n10; p = 1 with no discordant clip.
    """
    a_only = int((a_right & ~b_right).sum())
    b_only = int((b_right & ~a_right).sum())
    n = a_only + b_only
    tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1))
    p = min(1.0, 2 * tail / 2**n) if n else 1.0
    return {"a_only": a_only, "b_only": b_only, "discordant": n, "p_value": p}


def _p_value(delta: float, samples: torch.Tensor) -> float | None:
    """Two-sided bootstrap p-value: 2 × share of resampled differences at or beyond 0 from the observed side, with
    the usual +1 correction ((k + 1) / (R + 1)), so that R resamples never claim p = 0 (the floor is 2 / (R + 1))."""
    finite = samples[~torch.isnan(samples)]  # [R']
    if finite.numel() == 0:
        return None
    if delta == 0:
        return 1.0
    other = (finite <= 0) if delta > 0 else (finite >= 0)
    return min(1.0, 2 * (float(other.double().sum()) + 1) / (finite.numel() + 1))


def paired_bootstrap(
    a: ClipOutcomes, b: ClipOutcomes, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """b - a for every metric both files have, on the same clips (matched by id; a mismatch is a ValueError).

    Returns {metrics: {name: {a, b, delta, interval: [lo, hi] | None, p_value}}, mcnemar (WAR, exact), n,
    n_resamples, confidence, seed}. With n_resamples = 0 only the deltas and McNemar are computed.
    """
    b = align(a, b)
    n = a.target.shape[0]
    keys = [k for k in a.keys if k in b.keys]
    pa, pb = point_metrics(a), point_metrics(b)
    if n_resamples:
        _check_settings(n, n_resamples, confidence)
        sa, sb = _resample([a, b], n_resamples, seed)
    metrics: dict[str, Any] = {}
    for k in keys:
        va, vb = pa[k], pb[k]
        delta = None if va is None or vb is None else vb - va
        entry: dict[str, Any] = {"a": va, "b": vb, "delta": delta, "interval": None, "p_value": None}
        if n_resamples and delta is not None:
            diff = sb[k] - sa[k]  # [R]
            entry["interval"] = percentile_interval(diff, confidence)
            entry["p_value"] = _p_value(delta, diff)
        metrics[k] = entry
    return {
        "metrics": metrics,
        "mcnemar": mcnemar_exact(a.pred == a.target, b.pred == b.target),
        "n": n,
        "n_resamples": n_resamples,
        "confidence": confidence,
        "seed": seed,
    }


__all__ = [
    "ClipOutcomes",
    "align",
    "bootstrap_interval",
    "mcnemar_exact",
    "paired_bootstrap",
    "percentile_interval",
    "point_metrics",
    "resampled_metrics",
]
