"""Pairing a stage module with its DataModule: the module says what its batches hold, the DataModule collates so.

A policy stage (SFT, GRPO, prediction) has a `collator` (its backbone's: "train" = prompt + target, "generate" =
prompts only), and the DataModule serves batches through its public `collate_fn`. `connect` hands the one to
the other where the pair is built: `ecr fit/validate/test/predict` call it once the CLI has instantiated both,
and Python code calls it (or passes `collate_fn=module.collator` to the DataModule) before `trainer.fit`::

    trainer.fit(module, datamodule=connect(module, ClipDataModule(...)))

Decoding and processing then run in the DataLoader workers. A module without a `collator` (ERV: its
DataModule collates sentences itself) leaves the DataModule as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

from ecr.errors import ConfigError

D = TypeVar("D")


@runtime_checkable
class Collating(Protocol):
    """A DataModule that serves its batches through a settable `collate_fn` (samples -> batch)."""

    collate_fn: Callable[[list[Any]], Any] | None


def connect(module: Any, datamodule: D) -> D:
    """Set `datamodule.collate_fn` to `module.collator` (when the module has one); returns the DataModule."""
    collator = getattr(module, "collator", None)
    if collator is None or datamodule is None:
        return datamodule
    if not isinstance(datamodule, Collating):
        raise ConfigError(
            f"{type(datamodule).__name__} has no `collate_fn` attribute for {type(module).__name__}'s collator"
        )
    datamodule.collate_fn = collator
    return datamodule
