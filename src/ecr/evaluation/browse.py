"""Browsing scored clips: one view per clip (truth, prediction, judged explanation label, quadrant) and filters.

The HTML report's examples and the explanations notebook both pick clips through these functions, so "an
inconsistent explanation" or "the prediction-right/explanation-wrong quadrant" means the same thing in both and
in `ecr score`: the explanation label ê is the judge's answer that `score_predictions` returns per clip
(`metrics["explanations"]`), MISSING (None) clips are in no quadrant, and the quadrant names are the keys of
`metrics["quadrants"]` (docs/method.md §5). Plain dataclasses and lists: no pandas needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ecr.errors import ConfigError
from ecr.evaluation.predictions import Prediction
from ecr.rows import markdown_table

QUADRANTS = (
    "prediction_right/explanation_right",
    "prediction_right/explanation_wrong",
    "prediction_wrong/explanation_right",
    "prediction_wrong/explanation_wrong",
)


@dataclass(frozen=True)
class ClipView:
    """One scored clip. `explanation` is the judge's ê (None = MISSING); `quadrant` is None for a MISSING ê."""

    id: str
    truth: str
    prediction: str | None
    explanation: str | None
    quadrant: str | None
    think: str | None
    sentences: list[dict[str, Any]] | None
    line: int

    @property
    def inconsistent(self) -> bool:
        """The explanation was judged and names another emotion than the prediction (ê ≠ ŷ, ŷ may be None)."""
        return self.explanation is not None and self.explanation != self.prediction


def quadrant(truth: str, prediction: str | None, explanation: str | None) -> str | None:
    """The quadrant key of a judged clip (`metrics["quadrants"]`), None when ê is MISSING."""
    if explanation is None:
        return None
    pred = "right" if prediction == truth else "wrong"
    expl = "right" if explanation == truth else "wrong"
    return f"prediction_{pred}/explanation_{expl}"


def clip_views(predictions: Sequence[Prediction], explanations: Mapping[str, str | None] | None) -> list[ClipView]:
    """A view per prediction, in file order; `explanations` is `score_predictions(...)["explanations"]`.

    With no judge (`explanations` None) every ê is None. A clip missing from `explanations` is a ConfigError
    (the two come from different files).
    """
    out = []
    for p in predictions:
        if explanations is not None and p.id not in explanations:
            raise ConfigError(f"clip {p.id!r} (line {p.line}) has no judged explanation: score the same file")
        expl = explanations[p.id] if explanations is not None else None
        out.append(
            ClipView(
                p.id, p.label, p.prediction, expl, quadrant(p.label, p.prediction, expl), p.think, p.sentences, p.line
            )
        )
    return out


def filter_clips(
    clips: Iterable[ClipView],
    *,
    quadrant: str | None = None,
    truth: str | None = None,
    prediction: str | None = None,
    explanation: str | None = None,
    inconsistent: bool | None = None,
) -> list[ClipView]:
    """The clips matching every filter given (None = any): quadrant key, true / predicted / explained label.

    An unknown quadrant name is a ConfigError listing the valid ones.
    """
    if quadrant is not None and quadrant not in QUADRANTS:
        raise ConfigError(f"quadrant: {quadrant!r} is not one of {list(QUADRANTS)}")
    return [
        c
        for c in clips
        if (quadrant is None or c.quadrant == quadrant)
        and (truth is None or c.truth == truth)
        and (prediction is None or c.prediction == prediction)
        and (explanation is None or c.explanation == explanation)
        and (inconsistent is None or c.inconsistent == inconsistent)
    ]


def clips_table(clips: Sequence[ClipView]) -> str:
    """The clips as a markdown table: id, truth, prediction, explanation label, quadrant."""
    rows = [
        [c.id, c.truth, c.prediction or "(no label)", c.explanation or "(missing)", c.quadrant or "-"] for c in clips
    ]
    return markdown_table(["id", "truth", "prediction", "explanation", "quadrant"], rows)


__all__ = ["QUADRANTS", "ClipView", "clip_views", "clips_table", "filter_clips", "quadrant"]
