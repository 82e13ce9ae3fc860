"""`ecr report`: one self-contained HTML page (plus PNGs) for one or more predictions files, side by side.

Every number comes from `ecr score`'s own functions: `score_predictions` per file (metrics, bootstrap
intervals, the judge's ê per clip) and `compare_predictions` for each file after the first against the first
(deltas b − a with paired-bootstrap intervals, p-values and the exact McNemar test for WAR). Nothing is
recomputed here. The page itself (headline table, figures, quadrants, highlighted inconsistent explanations) is
built by `ecr.evaluation.page`; this module scores the files, draws the figures and writes the folder.

`report.json` beside the page holds the same numbers.
Bad input is handled as in `ecr score` (`on_error`, `manifest`): each run's metrics carry `skipped` and, with a
manifest, `missing_clips`, and the headline table counts them when there are any.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Unpack

from ecr.errors import ConfigError, atomic_output
from ecr.evaluation.browse import QUADRANTS, clip_views
from ecr.evaluation.judges import Judge
from ecr.evaluation.page import Run, render_html
from ecr.evaluation.predictions import DatasetSplit, DatasetSplitOptions, OnError, dataset_split, load_predictions
from ecr.evaluation.score import build_judges, compare_predictions, print_left_out, score_predictions
from ecr.labels import LabelSet, get_label_set

ReportJudge = Literal["verifier", "cue", "none"]


def run_names(paths: Sequence[Path], names: Sequence[str] | None = None) -> list[str]:
    """Column names: `names` if given (one per file, unique), else the file stems, else the parent folder names,
    else the shortest unique path tails; a file given twice gets "#2", "#3"."""
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(paths):
            raise ConfigError(f"names: {len(names)} names for {len(paths)} predictions files")
        if len(set(names)) != len(names) or not all(names):
            raise ConfigError(f"names: {names} must be non-empty and unique")
        return names
    stems = [p.with_suffix("") for p in paths]
    depth = max(len(s.parts) for s in stems)
    for choice in (
        [s.name for s in stems],
        [s.parent.name for s in stems],
        *(["/".join(s.parts[-k:]) for s in stems] for k in range(2, depth + 1)),
    ):
        if all(choice) and len(set(choice)) == len(choice):
            return choice
    seen: dict[str, int] = {}
    out = []
    for s in stems:
        seen[s.name] = seen.get(s.name, 0) + 1
        out.append(s.name if seen[s.name] == 1 else f"{s.name}#{seen[s.name]}")
    return out


def make_judge(
    judge: str,
    label_set: LabelSet,
    verifier: Path | None = None,
    threshold: float | None = None,
    splitter: str = "",
    cue_table: Path | None = None,
) -> Judge | None:
    """The judge `ecr score` would use for these options (verifier folder, stored sentence labels, cue table)."""
    if judge not in ("verifier", "cue", "none"):
        raise ConfigError(f"judge: {judge!r} is not verifier, cue or none")
    judges = build_judges(
        judge, label_set, verifier=verifier, threshold=threshold, splitter=splitter or "official", cue_table=cue_table
    )
    return judges[0] if judges else None


def score_runs(
    paths: Sequence[Path],
    label_set: LabelSet,
    judge: Judge | None,
    *,
    names: Sequence[str] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    on_error: OnError = "raise",
    dataset: DatasetSplit | None = None,
) -> tuple[list[Run], list[dict[str, Any]]]:
    """Each file scored (with intervals when bootstrap > 0) and each file after the first compared to the first.

    A bad predictions file is the `ManifestError` of `load_predictions` (with `on_error` skip its bad rows are
    dropped and counted in the run's metrics `skipped`; `dataset`: checked against that split, `missing_clips`);
    files on different clips are a ConfigError naming both files.
    """
    if not paths:
        raise ConfigError("predictions: give at least one predictions file")
    if bootstrap < 0:
        raise ConfigError(f"bootstrap: {bootstrap} must be >= 0 (0 = no intervals)")
    paths = [Path(p) for p in paths]
    labels = run_names(paths, names)
    runs = []
    for name, path in zip(labels, paths, strict=True):
        read = load_predictions(path, label_set, on_error, dataset)
        rows = read.rows
        if not rows:
            raise ConfigError(f"{path}: the predictions file holds no rows")
        metrics = {**score_predictions(rows, label_set, judge, bootstrap=bootstrap, seed=seed), **read.report()}
        runs.append(Run(name, path, rows, metrics, clip_views(rows, metrics.get("explanations")), read))
    comparisons = []
    for run in runs[1:]:
        try:
            cmp = compare_predictions(runs[0].predictions, run.predictions, label_set, judge, bootstrap, seed)
        except ConfigError as err:
            raise ConfigError(f"{run.path} vs {runs[0].path}: {err}") from err
        comparisons.append({"a": runs[0].name, "b": run.name, **cmp})
    return runs, comparisons


def write_report(
    predictions: Sequence[Path],
    out: Path,
    *,
    labels: str | Sequence[str] | LabelSet,
    judge: ReportJudge = "verifier",
    verifier: Path | None = None,
    threshold: float | None = None,
    splitter: str = "official",
    bootstrap: int = 1000,
    seed: int = 0,
    names: Sequence[str] | None = None,
    max_examples: int = 20,
    on_error: OnError = "raise",
    dataset: DatasetSplit | None = None,
    cue_table: Path | None = None,
) -> Path:
    """Score the files, draw the figures and write `out/index.html` (+ PNGs, report.json); return the page's path.

    `on_error` and `dataset` are `score_runs`'s (what bad rows do, the manifest split the files must cover)."""
    out = _check_output(out, max_examples)
    label_set = labels if isinstance(labels, LabelSet) else get_label_set(labels)
    chosen = make_judge(judge, label_set, verifier, threshold, splitter, cue_table)
    runs, comparisons = score_runs(
        predictions, label_set, chosen, names=names, bootstrap=bootstrap, seed=seed, on_error=on_error, dataset=dataset
    )
    return save_report(out, runs, comparisons, label_set, chosen, max_examples)


def _check_output(out: Path, max_examples: int) -> Path:
    """The output folder as a Path, checked before any scoring (a ConfigError naming the option otherwise)."""
    if max_examples < 0:
        raise ConfigError(f"max_examples: {max_examples} must be >= 0")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {out} exists and is not a folder")
    return out


def save_report(
    out: Path,
    runs: Sequence[Run],
    comparisons: Sequence[Mapping[str, Any]],
    label_set: LabelSet,
    judge: Judge | None,
    max_examples: int = 20,
) -> Path:
    """Write the scored runs' figures (PNG), report.json and index.html into `out`; return the page's path."""
    from ecr.evaluation import plots

    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, str] = {}
    for k, run in enumerate(runs):
        name = f"confusion_{k}.png"
        (out / name).write_bytes(plots.figure_png(plots.confusion_heatmap(run.metrics["confusion"], run.name)))
        images["confusion/" + run.name] = name
    recall = {r.name: r.metrics["per_class_recall"] for r in runs}
    (out / "recall.png").write_bytes(plots.figure_png(plots.recall_bars(recall, label_set.labels)))
    images["recall"] = "recall.png"
    summary = {
        "runs": [{"name": r.name, "predictions": os.fspath(r.path), "metrics": r.metrics} for r in runs],
        "comparisons": list(comparisons),
        "quadrant_keys": list(QUADRANTS),
    }
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    with atomic_output(out / "index.html") as tmp:
        tmp.write_text(render_html(runs, comparisons, label_set, judge, images, max_examples), encoding="utf-8")
    return out / "index.html"


def report_command(
    predictions: Path | list[Path],
    labels: str | list[str],
    out: Path,
    judge: ReportJudge = "verifier",
    verifier: Path | None = None,
    threshold: float | None = None,
    splitter: str = "official",
    cue_table: Path | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    names: list[str] | None = None,
    max_examples: int = 20,
    on_error: OnError = "raise",
    **dataset: Unpack[DatasetSplitOptions],
) -> int:
    """Write an HTML report (metrics with intervals, confusion, recall, quadrants, inconsistent explanations).

    Args:
        predictions: Predictions JSONL file(s) written by `ecr predict`: one path, or a list `[a.jsonl, b.jsonl]`;
            the first is the baseline, each other file is compared to it on the same clips (paired intervals).
        labels: Label set of the task: dfew | mafw | a list of labels (the files' labels must belong to it).
        out: Output folder: index.html (self-contained, no script), the PNG figures and report.json.
        judge: Explanation judge: verifier (per-sentence ERV labels) | cue (synthetic data: the generator's own
            sentence table, independent of the verifier) | none (WAR/UAR only, no examples).
        verifier: Verifier folder for judge=verifier; without it the sentence labels stored by `ecr predict` are used.
        threshold: Override of the verifier's saved threshold τ (None = the folder's own).
        splitter: Sentence splitter of the verifier judge: official (paper regex) | pysbd.
        cue_table: The synthetic dataset's cue_table.json (beside its manifest), for judge=cue.
        bootstrap: Bootstrap resamples over clips for every interval and paired delta (0 = no intervals).
        seed: Seed of the bootstrap resampling (same seed, same intervals).
        names: Column names, one per file (default: the file stems, or the parent folder names when those clash).
        max_examples: At most this many inconsistent-explanation examples per file on the page.
        on_error: A bad row (malformed, missing field, unknown label, duplicate id, not in the manifest's split,
            label differing from the manifest's): raise (stop, naming file:line) | skip (drop and count it: the
            page, report.json and the end of the output say how many; clips without a prediction are reported).
        dataset: `--manifest`, `--split`, `--val_fraction`, `--test_fraction`, `--split_seed`: the manifest split
            the predictions must cover (`ecr.evaluation.manifest_split.DatasetSplitOptions`).
    """
    paths = [Path(p) for p in predictions] if isinstance(predictions, list) else [Path(predictions)]
    label_set = get_label_set(labels)
    split = dataset_split(label_set, **dataset)
    folder = _check_output(out, max_examples)
    chosen = make_judge(judge, label_set, verifier, threshold, splitter, cue_table)
    runs, comparisons = score_runs(
        paths, label_set, chosen, names=names, bootstrap=bootstrap, seed=seed, on_error=on_error, dataset=split
    )
    page = save_report(folder, runs, comparisons, label_set, chosen, max_examples)
    print(page)
    print(f"report: {page} (open it in a browser)", file=sys.stderr)
    print_left_out([r.read for r in runs if r.read is not None])
    return 0


__all__ = ["make_judge", "report_command", "run_names", "save_report", "score_runs", "write_report"]
