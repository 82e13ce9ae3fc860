"""The text of `ecr score`: its metrics as markdown tables, and the number formats the report page shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ecr.rows import markdown_table


def fmt_pct(x: float | None) -> str:
    """A fraction as percent with 2 decimals (the printed tables and the report); n/a for None."""
    return "n/a" if x is None else f"{100 * x:.2f}"


def fmt_interval(x: Sequence[float] | None, missing: str = "n/a") -> str:
    """[low, high] in percent; `missing` for None."""
    return missing if x is None else f"[{100 * x[0]:.2f}, {100 * x[1]:.2f}]"


def fmt_p(x: float | None) -> str:
    """A p-value with 3 significant digits; n/a for None."""
    return "n/a" if x is None else f"{x:.3g}"


def summary_table(metrics: dict[str, Any]) -> str:
    """The headline numbers as a markdown table (what `ecr score` prints), then the quadrants, the judges'
    agreement and the comparison with a second file when the metrics have them."""
    lines = [_headline_table(metrics)]
    if metrics.get("judge"):
        lines += ["", _quadrant_table(metrics["quadrants"])]
    for pair, agreement in (metrics.get("agreement") or {}).items():
        kappa = "n/a" if agreement["kappa"] is None else f"{agreement['kappa']:.3f}"
        lines.append(
            f"\njudges {pair}: raw agreement {fmt_pct(agreement['agreement'])} %, Cohen's kappa {kappa} "
            f"on {agreement['n']} clips both judged ({agreement['excluded']} excluded)"
        )
    if metrics.get("comparison"):
        lines += _comparison_lines(metrics)
    return "\n".join(lines)


def _headline_table(metrics: dict[str, Any]) -> str:
    rows = [
        ["WAR", fmt_pct(metrics["war"]), f"{metrics['n']} clips, {metrics['unparseable']} unparseable (wrong)"],
        ["UAR", fmt_pct(metrics["uar"]), f"mean recall over {len(metrics['uar_classes'])} classes present"],
    ]
    if metrics.get("judge"):
        note = f"{metrics['judged']} judged, {metrics['missing']} missing {metrics.get('missing_reasons') or ''}"
        if metrics.get("judges"):
            note = f"judge {metrics['judge']['judge']}: {note}"
        rows += [[name.upper(), fmt_pct(metrics[name]), note] for name in ("epc", "eea", "fcr")]
        for name, rep in list((metrics.get("judges") or {}).items())[1:]:
            note = f"judge {name}: {rep['judged']} judged, {rep['missing']} missing"
            rows += [[f"{key.upper()} ({name})", fmt_pct(rep[key]), note] for key in ("epc", "eea", "fcr")]
    compound = metrics.get("compound")
    if compound:
        rows.append(["compound", fmt_pct(compound["accuracy"]), f"{compound['n']} clips with several labels: any one"])
    intervals = metrics.get("intervals")
    if not intervals:
        return markdown_table(["metric", "%", "note"], rows)
    level = f"{100 * intervals['confidence']:g}% interval"
    rows = [[r[0], r[1], fmt_interval(intervals.get(r[0].lower())), r[2]] for r in rows]
    return markdown_table(["metric", "%", level, "note"], rows)


def _quadrant_table(q: dict[str, int]) -> str:
    rows = [
        [f"prediction {pred}", *(q[f"prediction_{pred}/explanation_{expl}"] for expl in ("right", "wrong"))]
        for pred in ("right", "wrong")
    ]
    return markdown_table(["", "explanation right", "explanation wrong"], rows)


def _comparison_lines(metrics: dict[str, Any]) -> list[str]:
    comparison = metrics["comparison"]
    level = f"{100 * comparison['confidence']:g}% interval"
    rows = [
        [
            k.upper(),
            fmt_pct(v["a"]),
            fmt_pct(v["b"]),
            fmt_pct(v["delta"]),
            fmt_interval(v["interval"]),
            fmt_p(v["p_value"]),
        ]
        for k, v in comparison["metrics"].items()
    ]
    mc = comparison["mcnemar"]
    return [
        "",
        f"b = {comparison['predictions']} vs a = {metrics.get('predictions', 'predictions')}:",
        "",
        markdown_table(["metric", "a %", "b %", "b - a (points)", level, "p"], rows),
        f"\nWAR, exact McNemar: {mc['a_only']} clips right in a only, {mc['b_only']} in b only, "
        f"p = {fmt_p(mc['p_value'])}",
    ]


__all__ = ["fmt_interval", "fmt_p", "fmt_pct", "summary_table"]
