"""Reading a policy stage's checkpoint outside Lightning: `ecr export`, `ecr predict --model.init_args.checkpoint`.

A policy-stage checkpoint (SFT, GRPO) holds the policy configuration (`hyper_parameters["policy"]`) and only the
trained tensors, under the module's `model.` prefix (`StageModule.checkpoint_keys`).
"""

from __future__ import annotations

import os
import pathlib
from pathlib import Path

import torch

from ecr.errors import ConfigError
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
