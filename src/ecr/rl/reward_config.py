"""Reward terms from configuration: the paper's three built-ins or any importable callable, each with a weight.

```yaml
rewards:
  - {name: format}                                   # weight 1 (the paper)
  - {name: accuracy}
  - {name: explanation, options: {splitter: pysbd}}  # needs `verifier:` (the ERV stage's folder)
  - {name: brevity, function: mypkg.rewards:brevity, weight: 0.2}
```

A custom `function` is `"module:attr"` naming a `RewardFn` (`(completions, labels) -> list[float]`) or a class
/ factory that returns one when called with `options` as keyword arguments. The verifier is loaded once and
shared by every term that needs it; its τ and mapping come from its folder (`erv.json`) unless overridden.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecr.errors import ConfigError
from ecr.labels import LabelSet
from ecr.models.verifier import Verifier, load_verifier
from ecr.rl.rewards import AccuracyReward, CombinedReward, ExplanationReward, FormatReward, RewardSpec

log = logging.getLogger(__name__)
BUILTIN_TERMS = ("format", "accuracy", "explanation")


@dataclass
class RewardTerm:
    """One reward term of the total: a built-in name or an importable callable, and its weight."""

    name: str
    """Term name, logged as `train/reward/<name>`: format | accuracy | explanation, or any name with `function`."""
    weight: float = 1.0
    """Weight of the term in the total reward."""
    function: str | None = None
    """`module:attr` of a custom reward (a RewardFn, or a factory called with `options`); None = built-in `name`."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword options of the term (format: strict; explanation: splitter, threshold, dedupe_sentences, ...)."""


DEFAULT_TERMS: tuple[RewardTerm, ...] = (RewardTerm("format"), RewardTerm("accuracy"), RewardTerm("explanation"))


def _import(target: str, where: str) -> Any:
    module, _, attr = target.partition(":")
    if not module or not attr:
        raise ConfigError(f"{where}: function {target!r} must be 'module:attr'")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{where}: cannot import {target!r}: {err}") from err


def build_reward(
    terms: Sequence[RewardTerm | dict[str, Any]],
    *,
    label_set: LabelSet,
    verifier: Verifier | str | Path | None = None,
    eos_tokens: tuple[str, ...] = (),
) -> CombinedReward:
    """The weighted total of `terms`; a bad name, import or mapping fails here, before training starts."""
    specs: list[RewardSpec] = []
    loaded: Verifier | None = None
    for i, raw in enumerate(terms):
        term = raw if isinstance(raw, RewardTerm) else RewardTerm(**raw)
        where = f"rewards[{i}] ({term.name})"
        options = dict(term.options)
        if term.function is not None:
            target = _import(term.function, where)
            fn = target(**options) if isinstance(target, type) or options else target
            if not callable(fn):
                raise ConfigError(f"{where}: {term.function!r} is not callable")
        elif term.name == "format":
            fn = FormatReward(strict=bool(options.pop("strict", False)), eos_tokens=eos_tokens)
        elif term.name == "accuracy":
            fn = AccuracyReward(label_set)
        elif term.name == "explanation":
            if verifier is None:
                raise ConfigError(f"{where}: the explanation reward needs `verifier` (the ERV stage's output folder)")
            if loaded is None:
                loaded = load_verifier(verifier) if isinstance(verifier, (str, Path)) else verifier
            fn = ExplanationReward(loaded, label_set, **options)
            log.info("explanation reward: τ = %.3f, mapping %s", fn.threshold, fn.reader.class_mapping())
        else:
            raise ConfigError(
                f"{where}: unknown reward {term.name!r}; built-ins are {BUILTIN_TERMS} (or set `function`)"
            )
        if term.function is None and term.name != "explanation" and options:
            raise ConfigError(f"{where}: unknown options {sorted(options)}")
        specs.append(RewardSpec(term.name, fn, float(term.weight)))
    return CombinedReward(specs)
