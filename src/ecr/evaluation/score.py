"""`ecr score`: every metric of docs/method.md §5 from a predictions file alone.

metrics.json holds, at the top level: `war`, `uar` (fractions in [0, 1]), `uar_rule` and `uar_classes` (the
classes the mean runs over), `n`, `unparseable`; `epc`, `eea`, `fcr` (None when the judge answered nothing),
`judged`, `missing` and `missing_reasons` (the judge's missing answers, counted, never labels); `per_class_recall`
(None for a class absent from the truth), `support`, `confusion` (rows = truth, columns = prediction + "(no
label)"), `quadrants` (judged clips: prediction right/wrong × explanation right/wrong) and `judge` (its
settings; `usage` adds requests, retries and cache hits for the LLM judge). With `judge="none"` only the
recognition metrics are computed.

Several judges (`judge=["verifier", "openai"]`): the top-level explanation metrics are the FIRST judge's;
`judges` holds every judge's own (`epc`, `eea`, `fcr`, `judged`, `missing`, `missing_reasons`, `quadrants`,
`judge`, `explanations`), and `agreement` holds, for every pair "a/b" in the given order, the raw agreement
and Cohen's κ on the clips both judges answered (`n`, `excluded`, the contingency `table`;
`ecr.metrics.agreement.judge_agreement`). Intervals and comparisons use the first judge. With the synthetic
`cue` judge and a verifier judge together, `verifier_vs_cue` scores the verifier's per-sentence labels against the
generator's sentence table (per-class precision/recall/F1/support and `macro_f1`: how good the reward's verifier
is, as a number; `ecr.evaluation.judges.verifier_vs_cue`).

Compound truth: when rows carry `labels` (every ground-truth label of the clip, e.g. MAFW's compound set),
`compound` holds the accuracy where a prediction counts as right when it is any of them, over the `n` clips
that have such a list (`ecr.metrics.compound`); WAR/UAR stay single-label.

Uncertainty (`ecr.metrics.intervals`): with `bootstrap` > 0 resamples (default 1000), `intervals` holds a
percentile bootstrap 95 % interval over clips for `war`, `uar` and, with a judge, `epc`, `eea`, `fcr` (None when
no resample had a judged clip), next to the settings `n_resamples`, `confidence` and `seed`. With `compare` (a
second predictions file on the same clips, scored with the same judge), `comparison` holds `predictions` (that
file), `n`, `metrics` ({name: {a, b, delta = b - a, interval, p_value}}: paired bootstrap on the same resampled
clips, two-sided), `mcnemar` (WAR: exact McNemar test on the clips right in one file only) and the settings.

Bad input (`ecr.evaluation.predictions.load_predictions`): `skipped` ({reason: count}, empty unless `on_error`
is skip) counts the rows dropped; with `manifest`, `missing_clips` (`n`, `first` ids) counts the clips of the
chosen split that have no prediction (an error unless skipping). `comparison` carries the same two for the
compared file. The counts and the first few `file:line` locations are printed to stderr at the end.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Unpack

import torch

from ecr.errors import ConfigError, atomic_output
from ecr.evaluation.judges import (
    CueJudge,
    Judge,
    LLMJudge,
    StoredVerifierJudge,
    VerifierJudge,
    verifier_sentence_sets,
    verifier_vs_cue,
)
from ecr.evaluation.predictions import (
    DatasetSplitOptions,
    OnError,
    Prediction,
    PredictionsFile,
    dataset_split,
    load_predictions,
)
from ecr.evaluation.summary import summary_table
from ecr.labels import LabelSet, get_label_set
from ecr.metrics.agreement import judge_agreement
from ecr.metrics.assembly import ClipMetrics, class_ids
from ecr.metrics.explanation import ExplanationMetrics
from ecr.metrics.intervals import ClipOutcomes, bootstrap_interval, paired_bootstrap
from ecr.teachers.base import Missing
from ecr.teachers.openai_chat import OpenAIConfig

JudgeName = Literal["verifier", "cue", "openai", "none"]


def score_predictions(
    predictions: Sequence[Prediction],
    label_set: LabelSet,
    judge: Judge | Sequence[Judge] | None,
    bootstrap: int = 0,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The metrics dict of metrics.json (see the module docstring) for validated predictions.

    `judge` may be several judges: the first gives the top-level explanation metrics, all of them `judges` and
    `agreement`. `bootstrap` > 0 adds `intervals` (that many resamples, seeded by `seed`); 0 leaves them out.
    """
    out, clips = _score(predictions, label_set, judge)
    if bootstrap > 0:
        out["intervals"] = bootstrap_interval(clips, n_resamples=bootstrap, confidence=confidence, seed=seed)
    return out


def _judge_list(judge: Judge | Sequence[Judge] | None) -> list[Judge]:
    judges = [] if judge is None else [judge] if isinstance(judge, Judge) else list(judge)
    names = [j.name for j in judges]
    if len(set(names)) != len(names):
        raise ConfigError(f"judge: each judge may be given once, got {names}")
    return judges


def _score(
    predictions: Sequence[Prediction], label_set: LabelSet, judge: Judge | Sequence[Judge] | None
) -> tuple[dict[str, Any], ClipOutcomes]:
    """The metrics dict without intervals, and the per-clip class ids (first judge) the bootstrap resamples."""
    judges = _judge_list(judge)
    labels = label_set.labels
    ids = [p.id for p in predictions]
    target = class_ids([p.label for p in predictions], labels)  # [N]
    pred = class_ids([p.prediction for p in predictions], labels)  # [N]
    answers = [_judge_answers(predictions, j) for j in judges]  # per judge: (labels per clip, its report extras)
    explained = [class_ids(a, labels) for a, _ in answers]  # per judge: long [N]
    metrics = ClipMetrics(labels, judged=bool(judges))
    metrics.update(pred, target, explained[0] if judges else None, [p.labels for p in predictions])
    out = metrics.report(answers[0][1]["judge"] if judges else None)
    if not judges:
        return out, ClipOutcomes(pred, target, len(labels), ids=ids)
    out.update(answers[0][1])
    if len(judges) > 1:
        out["judges"] = {
            j.name: {**_explanation_report(pred, e, target), **extras}
            for j, e, (_, extras) in zip(judges, explained, answers, strict=True)
        }
        out["agreement"] = {
            f"{judges[a].name}/{judges[b].name}": judge_agreement(answers[a][0], answers[b][0], labels)
            for a in range(len(judges))
            for b in range(a + 1, len(judges))
        }
    cue = next((j for j in judges if isinstance(j, CueJudge)), None)
    verifier = next((j for j in judges if isinstance(j, VerifierJudge | StoredVerifierJudge)), None)
    if cue is not None and verifier is not None:
        out["verifier_vs_cue"] = verifier_vs_cue(cue, *verifier_sentence_sets(verifier, predictions))
    return out, ClipOutcomes(pred, target, len(labels), explained[0], ids=ids)


def _judge_answers(predictions: Sequence[Prediction], judge: Judge) -> tuple[list[str | None], dict[str, Any]]:
    """One judge's label per clip (None = MISSING) and what its report adds to the metrics: `missing_reasons`,
    `judge` (its settings, with the LLM judge's usage) and `explanations` (clip id -> label)."""
    results = judge.judge(predictions)
    if len(results) != len(predictions):
        raise RuntimeError(f"judge {judge.name!r} returned {len(results)} answers for {len(predictions)} predictions")
    reasons = Counter(r.reason for r in results if isinstance(r, Missing))
    answers = [None if isinstance(r, Missing) else r for r in results]
    settings = judge.settings()
    if isinstance(judge, LLMJudge):
        settings["usage"] = judge.usage()
    extras = {
        "missing_reasons": dict(sorted(reasons.items())),
        "judge": settings,
        "explanations": {p.id: a for p, a in zip(predictions, answers, strict=True)},
    }
    return answers, extras


def _explanation_report(pred: torch.Tensor, explained: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    """EPC/EEA/FCR, judged, missing and quadrants of one judge (each judge's entry in `judges`)."""
    metric = ExplanationMetrics()
    metric.update(pred, explained, target)
    return metric.report()


def compare_predictions(
    a: Sequence[Prediction],
    b: Sequence[Prediction],
    label_set: LabelSet,
    judge: Judge | None,
    bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Paired comparison b - a of two predictions files on the same clips (the `comparison` of metrics.json).

    A different clip id set or ground truth is a ConfigError naming the difference.
    """
    _, clips_a = _score(a, label_set, judge)
    return _compare(clips_a, b, label_set, judge, bootstrap, seed, confidence)


def _compare(
    clips_a: ClipOutcomes,
    b: Sequence[Prediction],
    label_set: LabelSet,
    judge: Judge | Sequence[Judge] | None,
    bootstrap: int,
    seed: int,
    confidence: float = 0.95,
) -> dict[str, Any]:
    _, clips_b = _score(b, label_set, judge)
    try:
        return paired_bootstrap(clips_a, clips_b, n_resamples=bootstrap, confidence=confidence, seed=seed)
    except ValueError as err:
        raise ConfigError(f"compare: {err}") from err


def build_judges(
    judge: str | Sequence[str],
    label_set: LabelSet,
    *,
    verifier: Path | None = None,
    threshold: float | None = None,
    splitter: str = "official",
    openai: OpenAIConfig | None = None,
    cache: Path | None = None,
    cue_table: Path | None = None,
) -> list[Judge]:
    """The judges named by `judge` (`ecr score`'s and `ecr report`'s option): [] for none; verifier = the folder's
    verifier when given, else the sentence labels `ecr predict` stored; cue = the synthetic generator's sentence
    table (`cue_table`); openai = the LLM judge (cache required)."""
    names = [judge] if isinstance(judge, str) else list(judge)
    if not names or ("none" in names and len(names) > 1):
        raise ConfigError(f"judge: {names} must be none alone, or one or more of verifier, cue, openai")
    if len(set(names)) != len(names):
        raise ConfigError(f"judge: each judge may be given once, got {names}")
    chosen: list[Judge] = []
    for name in names:
        if name == "none":
            continue
        if name == "verifier":
            if verifier is not None:
                chosen.append(VerifierJudge(verifier, label_set, threshold=threshold, splitter=splitter))
            else:
                chosen.append(StoredVerifierJudge(label_set))
        elif name == "cue":
            if cue_table is None:
                raise ConfigError("judge cue: needs --cue_table (the cue_table.json `ecr data synth` writes)")
            chosen.append(CueJudge(cue_table, label_set))
        elif name == "openai":
            if cache is None:
                raise ConfigError("judge openai: needs an answer cache file (so a rerun pays nothing twice)")
            config = openai or OpenAIConfig(model="gpt-4.1-mini", max_tokens=16)
            chosen.append(LLMJudge(label_set, config=config, cache_path=cache))
        else:
            raise ConfigError(f"judge: {name!r} is not verifier, cue, openai or none")
    return chosen


def score_command(
    predictions: Path,
    labels: str | list[str],
    out: Path | None = None,
    judge: JudgeName | list[JudgeName] = "verifier",
    verifier: Path | None = None,
    threshold: float | None = None,
    splitter: str = "official",
    openai: OpenAIConfig | None = None,
    cache: Path | None = None,
    cue_table: Path | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    compare: Path | None = None,
    on_error: OnError = "raise",
    **dataset: Unpack[DatasetSplitOptions],
) -> int:
    """Score a predictions file: WAR/UAR, EPC/EEA/FCR with a judge, per-class recall, confusion, quadrants.

    Args:
        predictions: Predictions JSONL written by `ecr predict` (one row per clip: id, label, prediction, think, ...).
        labels: Label set of the task: dfew | mafw | a list of labels (the file's labels must belong to it).
        out: Where to write metrics.json (default: <predictions>.metrics.json).
        judge: Explanation judge: verifier (offline, per-sentence ERV labels) | cue (synthetic data: the generator's
            own sentence table, independent of the verifier) | openai (LLM judge) | none (WAR/UAR),
            or several, e.g. [verifier, openai] (or `--judge verifier --judge+ openai`): the first gives the headline
            EPC/EEA/FCR, metrics.json adds each judge's (`judges`) and their agreement and Cohen's kappa.
        verifier: Verifier folder for judge=verifier; without it the sentence labels stored by `ecr predict` are used.
        threshold: Override of the verifier's saved threshold τ (None = the folder's own).
        splitter: Sentence splitter of the verifier judge: official (paper regex) | pysbd.
        openai: LLM judge settings (model, base_url, api_key_env, concurrency, retries); default model gpt-4.1-mini.
        cache: Append-only answer cache of the LLM judge (default: <out>.judge_cache.jsonl).
        cue_table: The synthetic dataset's cue_table.json (`ecr data synth` writes it beside manifest.jsonl), for
            judge=cue.
        bootstrap: Bootstrap resamples over clips for the 95 % intervals of every headline metric (0 = no intervals).
        seed: Seed of the bootstrap resampling (same seed, same intervals).
        compare: A second predictions file on the same clips: metrics.json gains `comparison` (deltas b - a with
            paired-bootstrap intervals and p-values, exact McNemar test for WAR), scored with the same judge.
        on_error: A bad row (malformed, missing field, unknown label, duplicate id, not in the manifest's split,
            label differing from the manifest's): raise (stop, naming file:line) | skip (drop and count it,
            metrics.json `skipped`, printed at the end; clips of the split without a prediction are reported).
        dataset: `--manifest`, `--split`, `--val_fraction`, `--test_fraction`, `--split_seed`: the manifest split
            the predictions must cover (`ecr.evaluation.manifest_split.DatasetSplitOptions`).
    """
    label_set = get_label_set(labels)
    predictions = Path(predictions)
    split = dataset_split(label_set, **dataset)
    read = load_predictions(predictions, label_set, on_error, split)
    out = Path(out) if out is not None else predictions.with_name(predictions.name + ".metrics.json")
    chosen = _command_judges(judge, label_set, out, cache, verifier, threshold, splitter, openai, cue_table)
    other = load_predictions(Path(compare), label_set, on_error, split) if compare is not None else None
    metrics = _file_metrics(read, other, label_set, chosen, bootstrap, seed)
    with atomic_output(out) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    print(summary_table(metrics))
    print(f"metrics: {out}", file=sys.stderr)
    print_left_out([read] if other is None else [read, other])
    return 0


def _command_judges(
    judge: JudgeName | list[JudgeName],
    label_set: LabelSet,
    out: Path,
    cache: Path | None,
    verifier: Path | None,
    threshold: float | None,
    splitter: str,
    openai: OpenAIConfig | None,
    cue_table: Path | None,
) -> list[Judge]:
    """`build_judges` for `ecr score`: the LLM judge's answer cache defaults to `<out>.judge_cache.jsonl`, beside
    metrics.json."""
    cache = Path(cache) if cache is not None else out.with_name(out.name + ".judge_cache.jsonl")
    return build_judges(
        judge,
        label_set,
        verifier=verifier,
        threshold=threshold,
        splitter=splitter,
        cue_table=cue_table,
        openai=openai,
        cache=cache,
    )


def _file_metrics(
    read: PredictionsFile,
    other: PredictionsFile | None,
    label_set: LabelSet,
    judges: Sequence[Judge],
    bootstrap: int,
    seed: int,
) -> dict[str, Any]:
    """metrics.json of `ecr score`: the file's metrics, what reading it left out, its intervals (bootstrap > 0)
    and, with a second file, the comparison b - a (first judge)."""
    if bootstrap < 0:
        raise ConfigError(f"bootstrap: {bootstrap} must be >= 0 (0 = no intervals)")
    scored, clips = _score(read.rows, label_set, judges)
    metrics = {"predictions": os.fspath(read.path), **scored, **read.report()}
    if bootstrap > 0:
        metrics["intervals"] = bootstrap_interval(clips, n_resamples=bootstrap, seed=seed)
    if other is not None:
        comparison = _compare(clips, other.rows, label_set, list(judges[:1]), bootstrap=bootstrap, seed=seed)
        metrics["comparison"] = {"predictions": os.fspath(other.path), **comparison, **other.report()}
    return metrics


def print_left_out(reads: Sequence[PredictionsFile]) -> None:
    """The skipped rows and missing clips of each file, on stderr after everything else (so they stay visible)."""
    for read in reads:
        for line in read.summary_lines():
            print(line, file=sys.stderr)


__all__ = [
    "compare_predictions",
    "print_left_out",
    "score_command",
    "score_predictions",
    "summary_table",
]
