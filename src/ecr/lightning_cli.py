"""`ecr`'s LightningCLI (`ecr fit|validate|test|predict`): imported only when a Lightning command runs.

Importing this module imports Lightning and every stage class (`STAGE_MODULES`), so that `ecr fit --help` lists
them and `--model GRPOModule` / `--model.help GRPOModule` resolve by short name. `ecr.cli` imports it lazily;
`ecr --help` and the utility commands never do.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import ArgsType, LightningCLI

from ecr.errors import ConfigError
from ecr.extras import check_installed

# the stage classes and DataModules: listed by `ecr fit --help`, addressable by short name (`--model SFTModule`)
STAGE_MODULES: tuple[str, ...] = (
    "ecr.modules.sft", "ecr.modules.erv", "ecr.modules.grpo", "ecr.modules.predict",
    "ecr.data.datamodule", "ecr.data.text", "ecr.data.sentences",
)  # fmt: skip
for _module in STAGE_MODULES:
    importlib.import_module(_module)


def _has_omegaconf() -> bool:
    return importlib.util.find_spec("omegaconf") is not None


class ECRCLI(LightningCLI):
    """LightningCLI with `ecr` defaults: subclass mode for model and data, config saved (overwriting) per run."""

    def __init__(self, args: ArgsType = None, run: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_kwargs", {"parser_mode": "omegaconf"} if _has_omegaconf() else {})
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            run=run,
            **kwargs,
        )

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """The configured Trainer, writing checkpoints through `SafeCheckpointIO` unless a plugin was chosen."""
        from lightning.pytorch.plugins.io import TorchCheckpointIO

        from ecr.modules.checkpointing import SafeCheckpointIO

        trainer = super().instantiate_trainer(**kwargs)
        strategy = trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO and not type(strategy).__name__.startswith("DeepSpeed"):
            strategy.checkpoint_io = SafeCheckpointIO()
        return trainer

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
        """Lightning's, plus `ecr`'s progress bar unless the config names one; `ecr predict` logs nothing
        (its output is the predictions file), so it gets no logger folder."""
        from lightning.pytorch.callbacks import ProgressBar

        from ecr.callbacks import quiet_progress_bar

        configured = [*(config.get("callbacks") or []), *callbacks]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in configured):
            callbacks = [*callbacks, quiet_progress_bar()]
        if self.subcommand == "predict":
            config["logger"] = False
        return super()._instantiate_trainer(config, callbacks)

    def before_instantiate_classes(self) -> None:
        """A DeepSpeed strategy without DeepSpeed installed: one line naming the extra, not Lightning's error."""
        sub = self.config.get("subcommand")
        trainer = (self.config[sub] if sub else self.config).get("trainer") or {}
        if strategy_needs_deepspeed(trainer.get("strategy")):
            check_installed("deepspeed", "trainer.strategy (DeepSpeed)")

    def parse_arguments(self, parser: Any, args: ArgsType) -> None:
        """Parse, then check a `--ckpt_path` file before Lightning unpickles it (a clear error, not an OSError)."""
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        ckpt = self.config[sub].get("ckpt_path") if sub else None
        if ckpt and ckpt not in ("last", "best", "hpc") and "://" not in str(ckpt):
            check_checkpoint_file(Path(ckpt))

    def instantiate_classes(self) -> None:
        """Build the module and DataModule, then pair them: the module's collator becomes the DataModule's
        `collate_fn` (`ecr.modules.wiring.connect`)."""
        from ecr.modules.wiring import connect

        super().instantiate_classes()
        connect(self.model, self.datamodule)

    def before_fit(self) -> None:
        self._resolve_last("fit")

    def _resolve_last(self, subcommand: str) -> None:
        """`--ckpt_path last` -> the newest last checkpoint of this run's folders, earlier versions included."""
        config = self.config_init[subcommand]
        if config.get("ckpt_path") != "last":
            return
        found = find_last_checkpoint(_checkpoint_dirs(self.trainer))
        if found is None:
            print(
                f"ecr {subcommand}: --ckpt_path last: no last checkpoint in {_checkpoint_dirs(self.trainer)}; "
                "training starts from scratch",
                file=sys.stderr,
            )
            config["ckpt_path"] = None
            return
        print(f"ecr {subcommand}: resuming from {found}", file=sys.stderr)
        config["ckpt_path"] = str(found)


def strategy_needs_deepspeed(strategy: Any) -> bool:
    """Whether a configured `trainer.strategy` (a name like "deepspeed_stage_2", a class_path namespace, or an
    instance) is one of Lightning's DeepSpeed strategies."""
    if strategy is None:
        return False
    if isinstance(strategy, str):
        return "deepspeed" in strategy.lower()
    class_path = strategy.get("class_path") if hasattr(strategy, "get") else None
    name = class_path if isinstance(class_path, str) else type(strategy).__name__
    return "deepspeed" in name.lower()


def _checkpoint_dirs(trainer: Any) -> list[Path]:
    """Where the trainer's ModelCheckpoints write: their `dirpath`, or every version of the logger's root."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    dirs: list[Path] = []
    for cb in trainer.checkpoint_callbacks:
        if not isinstance(cb, ModelCheckpoint):
            continue
        if cb.dirpath is not None:
            dirs.append(Path(cb.dirpath))
        elif trainer.loggers and getattr(trainer.loggers[0], "root_dir", None):
            dirs += sorted(Path(trainer.loggers[0].root_dir).glob("*/checkpoints"))
        else:
            dirs.append(Path(trainer.default_root_dir) / "checkpoints")
    return dirs


def check_checkpoint_file(path: Path) -> None:
    """A `--ckpt_path` must be a readable Lightning checkpoint; raises ConfigError naming it otherwise."""
    import torch

    if not path.is_file():
        raise ConfigError(f"--ckpt_path {path}: no such file")
    try:  # mmap: reads the index and the pickled structure, not the tensors
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - whatever the unpickler says, the file is unusable
        raise ConfigError(
            f"--ckpt_path {path}: not a readable checkpoint ({type(exc).__name__}: {str(exc)[:120]}); "
            "truncated by a full disk or a kill while saving? use an earlier one"
        ) from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(f"--ckpt_path {path}: not a Lightning checkpoint (no state_dict)")


def find_last_checkpoint(dirs: Iterable[Path]) -> Path | None:
    """Newest (by modification time) `last.ckpt` / `last-vN.ckpt` in `dirs`; None if there is none."""
    found = [p for d in dirs if d.is_dir() for p in d.glob("last*.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None
