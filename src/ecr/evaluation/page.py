"""The HTML of `ecr report`'s page: tables, highlighted explanations and the page around them (no I/O here).

Every number shown comes from the runs' metrics (`ecr.evaluation.score`); the page (CSS inline, no script, no
external URL) holds:

- the headline table: WAR, UAR, EPC, EEA, FCR with their intervals, one column per file, then one delta column
  per compared file; the clip, unparseable, judged and missing counts (and skipped rows and clips without a
  prediction when there are any); the UAR rule;
- a confusion-matrix heat map per file and the per-class recall bars grouped by file (PNG files beside the page,
  drawn by `plots.py`; `render_html` gets their paths);
- the quadrant table per file;
- browsable examples (`<details>`): clips whose judged explanation label differs from the prediction, each
  think sentence highlighted by its verifier label set (a colour per class, with a legend).

Every text taken from the files is HTML-escaped. `clip_card_html` is the same clip view for a notebook.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecr.evaluation.browse import ClipView, filter_clips
from ecr.evaluation.judges import CueJudge, Judge, VerifierJudge, think_completion
from ecr.evaluation.predictions import Prediction, PredictionsFile
from ecr.evaluation.summary import fmt_interval, fmt_p, fmt_pct
from ecr.labels import NEUTRAL, LabelSet
from ecr.metrics.assembly import HEADLINE

# Sentence highlight colours by position in the label set (light, readable under black text): for DFEW's order
# happy yellow, sad blue, neutral grey, angry red, surprise orange, disgust green, fear purple. Neutral is always grey.
CLASS_COLOURS = (
    "#ffe08a", "#9ecbff", "#e3e3e3", "#ff9e9e", "#ffc38a", "#a8e6a1",
    "#d5b3ff", "#8fe3e0", "#ffb3de", "#d9c29c", "#b8c4d6", "#e6ee9c",
)  # fmt: skip
NEUTRAL_COLOUR = "#e3e3e3"


@dataclass(frozen=True)
class Run:
    """One predictions file, scored: its column name, rows, metrics (score_predictions) and clip views."""

    name: str
    path: Path
    predictions: list[Prediction]
    metrics: dict[str, Any]
    clips: list[ClipView]
    read: PredictionsFile | None = None  # what reading dropped or found missing (None: built without a file)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def fmt_interval_blank(x: Sequence[float] | None) -> str:
    return fmt_interval(x, missing="")


def _delta(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f}"


def _cell(value: str, interval: str = "", **data: str) -> str:
    attrs = "".join(f' data-{k}="{_e(v)}"' for k, v in data.items())
    extra = f' <span class="ci">{_e(interval)}</span>' if interval else ""
    return f'<td{attrs}><span class="v">{_e(value)}</span>{extra}</td>'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], table_id: str = "", css: str = "") -> str:
    """An HTML table; `rows` are lists of ready `<td>`/`<th>` cells."""
    ident = f' id="{_e(table_id)}"' if table_id else ""
    cls = f' class="{_e(css)}"' if css else ""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    return f"<table{ident}{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def headline_html(runs: Sequence[Run], comparisons: Sequence[Mapping[str, Any]]) -> str:
    """The metrics table: value [interval] per file, then b − a [paired interval] and p per compared file."""
    judged = all(r.metrics.get("judge") for r in runs)
    header = ["metric (%)", *(r.name for r in runs)]
    for c in comparisons:
        header += [f"{c['b']} − {c['a']} (points)", "p"]
    rows = [_metric_row(key, runs, comparisons) for key in (HEADLINE if judged else HEADLINE[:2])]
    counts = [("clips", "n"), ("unparseable (wrong)", "unparseable")]
    if judged:
        counts += [("judged", "judged"), ("missing", "missing")]
    rows += [_count_row(title, key, runs, len(comparisons), _count_text(key)) for title, key in counts]
    rows += _left_out_rows(runs, len(comparisons))
    if any(r.metrics.get("compound") for r in runs):  # MAFW-style compound truth (`ecr score`'s `compound`)
        rows.append(_count_row("compound accuracy (%)", "compound", runs, len(comparisons), _compound_text))
    table = _table(header, rows, table_id="headline")
    return table + "".join(f'<p class="note">{_e(n)}</p>' for n in _headline_notes(runs, comparisons))


def _metric_row(key: str, runs: Sequence[Run], comparisons: Sequence[Mapping[str, Any]]) -> list[str]:
    """One headline metric: value [interval] per file, then delta [interval] and p per comparison."""
    row = [f"<th>{key.upper()}</th>"]
    for r in runs:
        interval = (r.metrics.get("intervals") or {}).get(key)
        row.append(_cell(fmt_pct(r.metrics[key]), fmt_interval_blank(interval), metric=key, run=r.name))
    for c in comparisons:
        entry = c["metrics"].get(key, {})
        row.append(
            _cell(_delta(entry.get("delta")), fmt_interval_blank(entry.get("interval")), metric=key, delta=c["b"])
        )
        row.append(_cell(fmt_p(entry.get("p_value")), metric=key, p=c["b"]))
    return row


def _count_row(
    title: str, key: str, runs: Sequence[Run], n_comparisons: int, text: Callable[[Mapping[str, Any]], str]
) -> list[str]:
    """A row of counts: one cell per file (`text` of its metrics), blank cells under the comparisons."""
    cells = [f"<th>{_e(title)}</th>", *(_cell(text(r.metrics), metric=key, run=r.name) for r in runs)]
    return cells + ["<td></td><td></td>"] * n_comparisons


def _count_text(key: str) -> Callable[[Mapping[str, Any]], str]:
    def text(metrics: Mapping[str, Any]) -> str:
        reasons = metrics.get("missing_reasons") if key == "missing" else None
        return str(metrics[key]) + (f" ({_pairs(reasons)})" if reasons else "")

    return text


def _pairs(counts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def _compound_text(metrics: Mapping[str, Any]) -> str:
    c = metrics.get("compound")
    return f"{fmt_pct(c['accuracy'])} ({c['n']} clips)" if c else "n/a"


def _skipped_text(metrics: Mapping[str, Any]) -> str:
    counts = metrics.get("skipped") or {}
    return str(sum(counts.values())) + (f" ({_pairs(counts)})" if counts else "")


def _missing_clips_text(metrics: Mapping[str, Any]) -> str:
    missing = metrics.get("missing_clips") or {"n": 0, "first": []}
    return str(missing["n"]) + (f" (first: {', '.join(missing['first'])})" if missing["first"] else "")


def _left_out_rows(runs: Sequence[Run], n_comparisons: int) -> list[list[str]]:
    """Count rows for the bad rows `on_error: skip` dropped and the dataset clips without a prediction (only
    when some run has any), so a score over fewer clips never looks like one over all of them."""
    rows = []
    if any(r.metrics.get("skipped") for r in runs):
        rows.append(_count_row("skipped rows", "skipped", runs, n_comparisons, _skipped_text))
    if any((r.metrics.get("missing_clips") or {}).get("n") for r in runs):
        rows.append(_count_row("clips without a prediction", "missing_clips", runs, n_comparisons, _missing_clips_text))
    return rows


def _headline_notes(runs: Sequence[Run], comparisons: Sequence[Mapping[str, Any]]) -> list[str]:
    """The notes under the headline table: what the brackets are, McNemar per comparison, the UAR rule."""
    notes = []
    intervals = next((r.metrics["intervals"] for r in runs if r.metrics.get("intervals")), None)
    if intervals is not None:
        notes.append(
            f"Brackets: {100 * intervals['confidence']:g} % percentile-bootstrap intervals over clips "
            f"({intervals['n_resamples']} resamples); deltas: paired bootstrap on the same resampled clips, "
            "two-sided p."
        )
    else:
        notes.append("No intervals (bootstrap 0).")
    for c in comparisons:
        mc = c["mcnemar"]
        notes.append(
            f"WAR, exact McNemar, {c['b']} vs {c['a']}: {mc['a_only']} clips right in {c['a']} only, "
            f"{mc['b_only']} in {c['b']} only, p = {fmt_p(mc['p_value'])}."
        )
    notes.append(f"UAR rule: {runs[0].metrics['uar_rule']}")
    notes += [f"UAR classes of {r.name}: {', '.join(r.metrics['uar_classes'])}." for r in runs]
    return notes


def quadrants_html(run: Run) -> str:
    """The 2 × 2 table of judged clips: prediction right/wrong × explanation right/wrong."""
    q = run.metrics["quadrants"]
    rows = []
    for pred in ("right", "wrong"):
        cells = [f"<th>prediction {pred}</th>"]
        for expl in ("right", "wrong"):
            key = f"prediction_{pred}/explanation_{expl}"
            cells.append(_cell(str(q[key]), quadrant=key, run=run.name))
        rows.append(cells)
    return _table(["", "explanation right", "explanation wrong"], rows, css="quadrants")


def class_colours(label_set: LabelSet, sentences: Sequence[Sequence[Mapping[str, Any]] | None]) -> dict[str, str]:
    """A colour per verifier class seen in the sentences shown, fixed by the class's place in the label set
    (classes outside it follow, sorted), so one label keeps its colour across reports."""
    seen = {cls for sents in sentences for s in sents or [] for cls in s.get("labels", {})}
    order = list(label_set.labels) + sorted(seen - set(label_set.labels))
    return {
        cls: NEUTRAL_COLOUR if cls == NEUTRAL else CLASS_COLOURS[i % len(CLASS_COLOURS)]
        for i, cls in enumerate(order)
        if cls in seen
    }


def sentences_html(sentences: Sequence[Mapping[str, Any]] | None, colours: Mapping[str, str]) -> str:
    """Each sentence highlighted by its label set (one colour, or stripes for two), labels and p after it."""
    if sentences is None:
        return '<p class="think missing">(no sentence labels stored)</p>'
    parts = []
    for s in sentences:
        labels = dict(s.get("labels") or {})
        fills = [colours.get(cls, NEUTRAL_COLOUR) for cls in labels] or ["#ffffff"]
        if len(fills) == 1:
            style = f"background:{fills[0]}"
        else:
            step = 100 / len(fills)
            stops = ", ".join(f"{c} {i * step:g}% {(i + 1) * step:g}%" for i, c in enumerate(fills))
            style = f"background:linear-gradient(180deg, {stops})"
        tags = " ".join(f'<span class="tag">{_e(cls)} {float(p):.2f}</span>' for cls, p in labels.items())
        title = ", ".join(labels) or "no label"
        parts.append(
            f'<span class="sentence" style="{_e(style)}" title="{_e(title)}">{_e(s.get("text", ""))}</span>{tags}'
        )
    return '<p class="think">' + " ".join(parts) + "</p>"


def legend_html(colours: Mapping[str, str]) -> str:
    """The colour legend of the sentence highlights."""
    chips = "".join(f'<span class="sentence" style="background:{_e(c)}">{_e(k)}</span> ' for k, c in colours.items())
    return f'<p class="legend">Sentence colours (verifier label set): {chips}</p>'


def clip_html(
    clip: ClipView, sentences: Sequence[Mapping[str, Any]] | None, colours: Mapping[str, str], *, expanded: bool = False
) -> str:
    """One browsable example: a `<details>` (closed unless `expanded`) whose summary gives id, truth, prediction and
    explanation label, and whose body is the highlighted think text."""
    summary = (
        f'<span class="id">{_e(clip.id)}</span> — truth <b>{_e(clip.truth)}</b>, prediction '
        f"<b>{_e(clip.prediction or '(no label)')}</b>, explanation <b>{_e(clip.explanation or '(missing)')}</b>"
    )
    return (
        f'<details class="example" data-id="{_e(clip.id)}"{" open" if expanded else ""}><summary>{summary}</summary>'
        f"{sentences_html(sentences, colours)}</details>"
    )


@dataclass(frozen=True)
class Examples:
    """The inconsistent clips of one run (all of them) and the ones shown, with their sentence label sets."""

    run: Run
    inconsistent: list[ClipView]
    shown: list[tuple[ClipView, list[dict[str, Any]] | None]]


def select_examples(runs: Sequence[Run], judge: Judge | None, max_examples: int) -> list[Examples]:
    """Per file, up to `max_examples` clips whose judged explanation label differs from the prediction."""
    if judge is None:
        return []
    out = []
    for run in runs:
        bad = filter_clips(run.clips, inconsistent=True)
        shown = bad[:max_examples]
        out.append(Examples(run, bad, list(zip(shown, sentence_sets(shown, judge), strict=True))))
    return out


def examples_html(examples: Sequence[Examples], colours: Mapping[str, str], judged: bool) -> str:
    """The examples section: a legend, then per file its count and one `<details>` per example shown."""
    if not judged:
        return "<p>No judge (judge none): no explanation labels, so no inconsistent explanations to show.</p>"
    parts = [legend_html(colours)]
    for ex in examples:
        name = ex.run.name
        parts.append(
            f'<section class="examples" data-run="{_e(name)}"><h3>{_e(name)}</h3>'
            f"<p>{len(ex.inconsistent)} of {len(ex.run.clips)} clips have an explanation that names another emotion "
            f"than the prediction; {len(ex.shown)} shown.</p>"
        )
        parts += [clip_html(c, s, colours) for c, s in ex.shown]
        parts.append("</section>")
    return "".join(parts)


def sentence_sets(clips: Sequence[ClipView], judge: Judge) -> list[list[dict[str, Any]] | None]:
    """Per clip, the sentence label sets the judge read: stored in the rows, or from the judge's verifier model."""
    if isinstance(judge, CueJudge):
        return [
            None
            if c.think is None
            else [{"text": t, "labels": {e: 1.0} if e else {}} for t, e, _ in judge.read(c.think)]
            for c in clips
        ]
    if isinstance(judge, VerifierJudge):
        read = judge.reader.sentence_labels([think_completion(c.think) for c in clips])
        return [None if s is None else [dict(x) for x in s] for s in read]
    return [c.sentences for c in clips]


def _settings_text(settings: Mapping[str, Any]) -> str:
    """The judge's settings in one line (the task -> verifier mapping is left out: it is in report.json)."""
    return ", ".join(f"{k}: {v}" for k, v in settings.items() if k != "mapping" and v is not None)


def clip_card_html(
    clip: ClipView, sentences: Sequence[Mapping[str, Any]] | None, label_set: LabelSet, frames_png: bytes | None
) -> str:
    """A clip's frames (PNG, embedded) beside its highlighted explanation and the colour legend (for a notebook)."""
    import base64

    colours = class_colours(label_set, [sentences])
    image = ""
    if frames_png is not None:
        data = base64.b64encode(frames_png).decode("ascii")
        image = f'<img src="data:image/png;base64,{data}" alt="frames of {_e(clip.id)}" style="max-width:55%">'
    text = legend_html(colours) + clip_html(clip, sentences, colours, expanded=True)
    return f'<div style="display:flex;gap:1em;align-items:flex-start">{image}<div>{text}</div></div>'


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f4f4f4; } thead th { text-align: center; }
.ci { color: #666; font-size: 0.85em; } .note { color: #444; font-size: 0.9em; margin: 0.2em 0; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: 0; } figcaption { text-align: center; font-size: 0.9em; }
details.example { border: 1px solid #ddd; border-radius: 4px; margin: 0.3em 0; padding: 0.3em 0.6em; }
details.example summary { cursor: pointer; } .id { font-family: monospace; }
.sentence { padding: 0.05em 0.2em; border-radius: 3px; line-height: 1.9; }
.tag { font-size: 0.7em; color: #555; border: 1px solid #bbb; border-radius: 3px; padding: 0 0.2em; margin: 0 0.2em; }
"""


def render_html(
    runs: Sequence[Run],
    comparisons: Sequence[Mapping[str, Any]],
    label_set: LabelSet,
    judge: Judge | None,
    images: Mapping[str, str],
    max_examples: int = 20,
) -> str:
    """The whole page; `images` maps figure keys ("recall", "confusion/<run name>") to relative PNG paths."""
    examples = select_examples(runs, judge, max_examples)
    colours = class_colours(label_set, [s for ex in examples for _, s in ex.shown])
    title = "ecr report: " + ", ".join(r.name for r in runs)
    files = "".join(f"<li><b>{_e(r.name)}</b>: {_e(os.fspath(r.path))} ({len(r.clips)} clips)</li>" for r in runs)
    judge_text = "judge: none (WAR/UAR only)" if judge is None else _e(_settings_text(judge.settings()))
    confusion = "".join(
        f'<figure><img src="{_e(images["confusion/" + r.name])}" alt="confusion matrix of {_e(r.name)}">'
        f"<figcaption>{_e(r.name)}</figcaption></figure>"
        for r in runs
    )
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<ul>{files}</ul>",
        f'<p class="note">Explanation {judge_text}. Labels: {_e(", ".join(label_set.labels))}.</p>',
        "<h2>Metrics</h2>",
        headline_html(runs, comparisons),
        "<h2>Confusion matrices</h2>",
        f'<div class="figures">{confusion}</div>',
        "<h2>Per-class recall</h2>",
        f'<figure><img src="{_e(images["recall"])}" alt="per-class recall"></figure>',
    ]
    if judge is not None:
        quadrants = "".join(f"<div><h3>{_e(r.name)}</h3>{quadrants_html(r)}</div>" for r in runs)
        body += ["<h2>Consistency quadrants (judged clips)</h2>", f'<div class="figures">{quadrants}</div>']
    body += ["<h2>Inconsistent explanations</h2>", examples_html(examples, colours, judge is not None)]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )


__all__ = [
    "CSS",
    "Examples",
    "Run",
    "class_colours",
    "clip_card_html",
    "clip_html",
    "examples_html",
    "headline_html",
    "legend_html",
    "quadrants_html",
    "render_html",
    "select_examples",
    "sentence_sets",
    "sentences_html",
]
