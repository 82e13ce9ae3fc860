"""The report's figures (matplotlib, Agg canvas): confusion heat map, per-class recall bars, a clip's frames.

Every function builds a `matplotlib.figure.Figure` on its own Agg canvas, never through `pyplot`, so no global
backend is switched (a notebook keeps its own) and nothing needs a display. `figure_png` renders a figure to
PNG bytes (what the HTML report writes and what a notebook shows). Import this module lazily: matplotlib costs
about half a second, which `ecr --help` must not pay.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ecr.extras import require

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_FEATURE = "ecr report's plots (matplotlib)"
FigureCanvasAgg = require("matplotlib.backends.backend_agg", _FEATURE).FigureCanvasAgg
_Figure = require("matplotlib.figure", _FEATURE).Figure

# One colour per run in grouped bars (matplotlib's tab10, as hex so the HTML can use the same colours).
RUN_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _figure(width: float, height: float) -> Figure:
    fig: Figure = _Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def confusion_heatmap(confusion: Mapping[str, Any], title: str = "") -> Figure:
    """Heat map of `ecr score`'s `confusion` ({"columns": labels + "(no label)", "matrix": [[count]]}).

    Rows are the true labels (the columns without the final "(no label)"), colour = share of the row's clips,
    each cell annotated with its count.
    """
    columns = list(confusion["columns"])
    counts = np.asarray(confusion["matrix"], dtype=np.float64)  # [K, K+1]
    rows = columns[: counts.shape[0]]
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)  # [K, K+1] row-normalised
    fig = _figure(1.2 + 0.62 * len(columns), 1.0 + 0.5 * len(rows))
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            colour = "white" if share[i, j] > 0.6 else "black"
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", color=colour, fontsize=8)
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    if title:
        ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="share of the true class")
    return fig


def recall_bars(per_class_recall: Mapping[str, Mapping[str, float | None]], labels: Sequence[str]) -> Figure:
    """Per-class recall (%) grouped by class, one bar per run: {run name: {label: recall or None}}.

    Each bar is labelled with its value; a class absent from a run's truth (recall None) gets no bar and "n/a".
    """
    runs = list(per_class_recall)
    fig = _figure(max(4.0, 0.9 * len(labels) * max(1, len(runs)) ** 0.5 + 1.5), 3.2)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(runs))
    x = np.arange(len(labels))
    for k, run in enumerate(runs):
        values = [per_class_recall[run].get(label) for label in labels]
        heights = [100 * v if v is not None else np.nan for v in values]
        bars = ax.bar(x + (k - (len(runs) - 1) / 2) * width, heights, width, label=run, color=RUN_COLOURS[k % 8])
        texts = ["n/a" if v is None else f"{100 * v:.0f}" for v in values]
        ax.bar_label(bars, labels=texts, fontsize=7, padding=1)
    ax.set_xticks(x, list(labels), rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 108)
    ax.set_ylabel("recall (%)")
    if len(runs) > 1:
        ax.legend(fontsize=8)
    return fig


def frame_strip(frames: Any, title: str = "") -> Figure:
    """A clip's sampled frames side by side: frames uint8 [T, 3, H, W] (what `ecr.data.decode_clip` returns)."""
    array = np.asarray(frames)
    if array.ndim != 4 or array.shape[1] != 3:
        raise ValueError(f"frames must be [T, 3, H, W], got shape {tuple(array.shape)}")
    count = array.shape[0]
    fig = _figure(1.3 * count, 1.6)
    for t in range(count):
        ax = fig.add_subplot(1, count, t + 1)
        ax.imshow(array[t].transpose(1, 2, 0))  # [H, W, 3]
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


__all__ = ["RUN_COLOURS", "confusion_heatmap", "figure_png", "frame_strip", "recall_bars"]
