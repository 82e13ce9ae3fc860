"""Resolve a model reference to a local folder without ever touching the network.

A folder path is used as is. Anything else is treated as a hub id and looked up in the local Hugging Face
cache only (`local_files_only=True`), so a missing model fails at once with an `ecr` error saying how to get
it, instead of a download attempt that hangs on an offline machine.
"""

from __future__ import annotations

from pathlib import Path

from ecr.errors import ConfigError


def resolve_pretrained(model: str, revision: str | None = None) -> Path:
    """Local folder of `model` (a path, or a hub id present in the HF cache). Raises ConfigError if absent."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise ConfigError(f"policy.model: folder {path} has no config.json (not a Hugging Face model folder)")
        return path
    looks_like_id = model.count("/") == 1 and not model.startswith((".", "/", "~"))
    if not looks_like_id:
        raise ConfigError(f"policy.model: {model!r} is neither an existing folder nor a hub id (org/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id=model, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as err:
        raise ConfigError(
            f"policy.model: {model!r} (revision {revision or 'main'}) is not in the local Hugging Face cache and "
            f"ecr never downloads weights. Fetch it where there is network (`hf download {model}`), copy the "
            f"cache (HF_HOME) here, or set policy.model to a local folder."
        ) from err
