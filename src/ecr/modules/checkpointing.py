"""Checkpoints of the stages, in one place: writing them safely, keeping only what training changed, reading them.

- `SafeCheckpointIO` (installed by `ecr fit`): a checkpoint is written beside its target and renamed over it, so
  a full disk cannot truncate the previous one, and a failed write is a `CheckpointWriteError`.
- Trainable-only checkpoints (`trainable_keys`, `keep_trainable`, `load_trainable`): parameters with
  `requires_grad` plus the module's own persistent buffers (e.g. the verifier's τ), never the frozen base weights,
  which come back from their source in `configure_model()`; loading checks that exactly those tensors are
  present, so a partial or foreign checkpoint cannot load silently. Checkpoints name their class
  (`_class_path`, as LightningCLI writes it), so `ecr fit … --ckpt_path PATH` can re-parse their
  hyper-parameters whatever way the module was built (CLI or Python).
- On resume, the train loader Lightning builds early to size the schedule is dropped before the restore
  (`release_early_train_loader`), so the fit loop rebuilds it and loads its saved position.
- Reading a policy stage's checkpoint outside Lightning (`ecr export`, `ecr predict --model.init_args.checkpoint`):
  it holds the policy configuration (`hyper_parameters["policy"]`) and only the trained tensors, under the
  module's `model.` prefix.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ecr.errors import CheckpointWriteError, ConfigError
from ecr.models import PolicyConfig

MODULE_PREFIX = "model."


def _versions(root: Path) -> list[Path]:
    """`root/version_N` folders, newest (highest N) first."""
    found = (d for d in root.glob("version_*") if d.is_dir() and d.name[8:].isdigit())
    return sorted(found, key=lambda d: int(d.name[8:]), reverse=True)


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint file `path` addresses: a file as is; a run folder (or `RUN/last`) -> its newest version.

    A run folder is a logger root such as `runs/sft/tb` holding `version_N/checkpoints/*.ckpt` (or the version
    folder, or its `checkpoints/` folder), or a stage folder holding such a root (`runs/mine/sft` with
    `tb/version_N`, as `ecr init` lays runs out). Its newest version folder that actually holds a checkpoint is
    taken (never "version_0": a rerun or an orphaned run may have written another), and in it `last.ckpt`, else
    the newest `.ckpt`. Used by `ecr export` and `ecr predict` so they follow the run they come after.
    """
    given = Path(path)
    if given.is_file():
        return given
    folder = given.parent if given.name == "last" and not given.exists() else given
    if not folder.is_dir():
        raise ConfigError(f"checkpoint {given} does not exist (give a .ckpt file or a run folder)")
    roots = [folder, *sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("version_"))]
    for candidate in [*(v for root in roots for v in _versions(root)), folder]:
        ckpts = [p for d in (candidate / "checkpoints", candidate) for p in d.glob("*.ckpt") if p.is_file()]
        if ckpts:
            last = [p for p in ckpts if p.name == "last.ckpt"]
            return last[0] if last else max(ckpts, key=lambda p: p.stat().st_mtime_ns)
    raise ConfigError(f"checkpoint {given}: no .ckpt file in {folder} or in its version_*/checkpoints folders")


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[PolicyConfig, dict[str, torch.Tensor]]:
    """Policy config and trained tensors (module prefix removed) of a stage checkpoint (weights-only load)."""
    path = resolve_checkpoint(path)
    # Safe (weights-only) unpickling. ecr components store plain strings in their hparams; paths are allowed
    # only for checkpoints written before that fix or by third-party DataModules.
    with torch.serialization.safe_globals([pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath]):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    hparams = ckpt.get("hyper_parameters", {})
    if "policy" not in hparams:
        raise ConfigError(f"{path}: no hyper_parameters['policy']; not a checkpoint of an ecr policy stage")
    state = {k[len(MODULE_PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(MODULE_PREFIX)}
    if not state:
        raise ConfigError(f"{path}: the state_dict holds no '{MODULE_PREFIX}*' tensors")
    return PolicyConfig.from_dict(hparams["policy"]), state


CLI_INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"


def class_path(obj: object) -> str:
    """Import path of `obj`'s class, as LightningCLI stores it in checkpoint hparams (`_class_path`)."""
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def release_early_train_loader(trainer: Any) -> None:
    """Before a checkpoint restore, drop a train loader built early, so the fit loop rebuilds it and restores it.

    `configure_optimizers` runs before the restore, and reading `trainer.estimated_stepping_batches` there (for
    the schedule's length) builds the train loader; the fit loop keeps that loader and loads saved loader
    positions only into one it builds after the restore, so a mid-epoch resume would replay the epoch from
    its first batch. Rebuilding is cheap (nothing is decoded until iteration).
    """
    fit_loop = trainer.fit_loop
    if not hasattr(fit_loop, "_combined_loader"):  # pinned Lightning: fail loudly if its internals move
        raise RuntimeError("Lightning's fit loop has no `_combined_loader`: update release_early_train_loader")
    if trainer.ckpt_path is not None and fit_loop._combined_loader is not None:
        fit_loop._combined_loader = None


class SafeCheckpointIO(TorchCheckpointIO):
    """Checkpoint writer that cannot destroy the previous checkpoint, and says so when a write fails.

    Lightning writes a local checkpoint to a temporary file in the system temp folder and then moves it: across
    file systems that move copies over the old file in place, so a full disk truncates the previous checkpoint
    too. Here the temporary file sits beside the target (same file system), is fsync'ed and `os.replace`d over
    it; a failed write removes it and raises `CheckpointWriteError` naming the file. Remote paths: Lightning's.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except (OSError, RuntimeError) as err:  # torch.save reports a failed write as a RuntimeError from OSError
            tmp.unlink(missing_ok=True)
            cause = err if isinstance(err, OSError) else err.__context__
            if not isinstance(cause, OSError):
                raise
            kept = f"{target} still holds the previous checkpoint" if target.is_file() else "nothing was replaced"
            raise CheckpointWriteError(
                f"writing checkpoint {target} failed ({cause.strerror or cause}); {kept}; free space and resume"
            ) from err
        return None


def _own_persistent_buffers(module: torch.nn.Module) -> Iterator[str]:
    return (n for n, _ in module.named_buffers(recurse=False) if n not in module._non_persistent_buffers_set)


def trainable_keys(module: torch.nn.Module) -> set[str]:
    """State-dict keys a checkpoint keeps: trained parameters and the module's own persistent buffers."""
    return {n for n, p in module.named_parameters() if p.requires_grad} | set(_own_persistent_buffers(module))


def keep_trainable(module: torch.nn.Module, checkpoint: dict[str, Any]) -> None:
    """Reduce a checkpoint Lightning is saving to the trained tensors and name the module's class."""
    keep = trainable_keys(module)
    checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
    # a copy: Lightning may hand over `self.hparams` itself; `_instantiator` makes load_from_checkpoint
    # accept `_class_path` (it routes through LightningCLI's instantiator, as for CLI-built modules)
    checkpoint["hyper_parameters"] = {
        "_class_path": class_path(module),
        "_instantiator": CLI_INSTANTIATOR,
        **dict(checkpoint.get("hyper_parameters") or {}),
    }


def check_trainable(
    module: torch.nn.Module, state_dict: Mapping[str, Any], strict: bool
) -> tuple[list[str], list[str]]:
    """(missing, unexpected) keys of a trainable-only state dict; strict = a ConfigError unless both are empty."""
    missing = sorted(trainable_keys(module) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(torch.nn.Module.state_dict(module)))
    if strict and (missing or unexpected):
        raise ConfigError(
            f"checkpoint does not match the module's trained tensors: missing {missing[:5]} "
            f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)}); was it trained with the "
            "same model, LoRA and freeze settings?"
        )
    return missing, unexpected


def save_rng(checkpoint: dict[str, Any]) -> None:
    """Add the torch (and CUDA) RNG states to a checkpoint Lightning is saving (`ecr_rng`)."""
    checkpoint["ecr_rng"] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        checkpoint["ecr_rng"]["cuda"] = torch.cuda.get_rng_state_all()


def restore_rng(checkpoint: dict[str, Any]) -> None:
    """Restore the RNG states `save_rng` stored (a checkpoint without them changes nothing)."""
    rng = checkpoint.get("ecr_rng") or {}
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
