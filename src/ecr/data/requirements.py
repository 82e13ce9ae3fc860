"""What each stage needs from its data beyond decodable clips, checked before any weights load.

`ecr data check` proves that clips decode; a stage can still fail later on a field it needs. SFT trains on
`<think>explanation</think><answer>label</answer>`, so every train/val row needs an explanation (a dataset
without them goes through `ecr explain` or GRPO first: docs/custom_data.md). The ERV stage learns from
labelled sentences, so a label with no sentence can never be predicted by the verifier. These rules live here,
as pure functions, so that `ecr data check --config <stage>.yaml` and the stage's own `setup()` apply the same
ones: the check reports them as bad rows, the stage raises one `ConfigError` line before loading its model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from ecr.errors import ConfigError

Stage = Literal["sft", "grpo", "predict", "erv"]

# LightningModule class name -> stage (a `model.class_path` names one of these)
STAGE_OF_MODULE: dict[str, Stage] = {
    "SFTModule": "sft",
    "GRPOModule": "grpo",
    "PredictModule": "predict",
    "ERVModule": "erv",
}
NEEDS_EXPLANATIONS: frozenset[str] = frozenset({"sft"})
EXPLANATION_SPLITS = ("train", "val")  # the splits the SFT loss reads (train and validation loops)
NO_EXPLANATION_HINT = (
    "bootstrap explanations with `ecr explain` (docs/custom_data.md) or start from GRPO, which needs labels only"
)


def stage_of(model: Mapping[str, Any] | str | None) -> Stage | None:
    """The stage a config's `model:` section (or class path) trains; None when it is not an ecr stage."""
    path = model.get("class_path") if isinstance(model, Mapping) else model
    return STAGE_OF_MODULE.get(str(path or "").rsplit(".", 1)[-1])


def rows_without_explanation(rows: Iterable[Any]) -> list[Any]:
    """Rows (ClipRecord, TextRecord, sample dicts) whose `explanation` is missing or blank."""

    def text(row: Any) -> str:
        value = row.get("explanation") if isinstance(row, Mapping) else getattr(row, "explanation", None)
        return str(value or "").strip()

    return [r for r in rows if not text(r)]


def explanation_rows(splits: Mapping[str, Sequence[Any]]) -> list[Any]:
    """The rows an SFT run trains and validates on (train + val splits)."""
    return [r for name in EXPLANATION_SPLITS for r in splits.get(name, ())]


def require_explanations(splits: Mapping[str, Sequence[Any]], stage: str = "SFT") -> None:
    """Raise one ConfigError line when a train/val row has no explanation (before the model loads)."""
    rows = explanation_rows(splits)
    missing = rows_without_explanation(rows)
    if not missing:
        return
    first = missing[0]
    where = getattr(first, "source", "") or getattr(first, "id", "")
    raise ConfigError(
        f"{stage} needs an explanation for every train/val clip: {len(missing)} of {len(rows)} have none "
        f"(first: {where}); {NO_EXPLANATION_HINT}"
    )


def label_support(label_lists: Iterable[Sequence[str]], labels: Sequence[str]) -> dict[str, int]:
    """Rows carrying each label, in label-set order (labels no row carries count 0)."""
    counts = Counter(lbl for lbls in label_lists for lbl in set(lbls))
    return {lbl: counts.get(lbl, 0) for lbl in labels}


def unsupported_labels(support: Mapping[str, int], ignore: Sequence[str] = ("neutral",)) -> list[str]:
    """Labels with no example at all (a verifier trained on these rows can never predict them)."""
    return [lbl for lbl, n in support.items() if n == 0 and lbl not in ignore]


def format_support(support: Mapping[str, int]) -> str:
    """`calm 12, excited 3, bored 0` (one line, for logs and errors)."""
    return ", ".join(f"{lbl} {n}" for lbl, n in support.items())
