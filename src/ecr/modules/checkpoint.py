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


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[PolicyConfig, dict[str, torch.Tensor]]:
    """Policy config and trained tensors (module prefix removed) of a stage checkpoint (weights-only load)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
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
