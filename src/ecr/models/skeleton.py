"""Where a policy's architecture comes from (a preset or a folder's `config.json`) and its meta-device model.

Shared by `ecr model info` (`ecr.models.info`: the census) and `ecr model check` (`ecr.models.layout`: the
expected tensors): both need the family's model with shapes only — no weights read, no memory used.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecr.errors import ConfigError
from ecr.models.config import PolicyConfig
from ecr.models.presets import PRESET_NAMES, preset_config

# config.json `model_type` (lower-cased) -> backbone family
MODEL_TYPES: dict[str, str] = {
    "qwen2_5_omni_thinker": "qwen2_5_omni",
    "qwen2_5_omni": "qwen2_5_omni",  # full Omni checkpoint: the thinker is `thinker_config`
    "humanomni_qwen2": "humanomni",
}


@dataclass(frozen=True)
class ModelSource:
    """Where an architecture comes from: its family, its `config.json` values and a readable origin."""

    family: str
    config: dict[str, Any]
    origin: str
    folder: Path | None = None  # the model folder (None for a preset)


def family_of(config: dict[str, Any], where: str) -> str:
    """Backbone family of a `config.json` (by `model_type`; HumanOmni's mixed-case type included)."""
    model_type = str(config.get("model_type", "")).lower()
    if model_type not in MODEL_TYPES:
        raise ConfigError(
            f"{where}: model_type {config.get('model_type')!r} is not a known policy family; "
            f"expected one of {sorted(MODEL_TYPES)}"
        )
    return MODEL_TYPES[model_type]


def read_config_json(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"{folder}: no config.json (expected a Hugging Face model folder)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from err


def model_source(model: str | Path) -> ModelSource:
    """A preset name (`qwen2.5-omni-7b`, ...), a local model folder or a hub id in the local HF cache."""
    name = str(model)
    if name.strip().lower() in PRESET_NAMES:
        config = preset_config(name)
        return ModelSource(family_of(config, f"preset {name}"), config, f"preset {name.strip().lower()}")
    from ecr.hub import resolve_pretrained

    try:
        folder = resolve_pretrained(name)
    except ConfigError as err:
        raise ConfigError(f"{name!r} is not a preset ({', '.join(PRESET_NAMES)}), and {err}") from err
    config = read_config_json(folder)
    return ModelSource(family_of(config, str(folder / "config.json")), config, str(folder), folder)


def build_skeleton(source: ModelSource) -> Any:
    """The family's model (the module `ecr` trains) on the meta device: shapes only, no memory, no weights."""
    if source.family == "qwen2_5_omni":
        import torch
        from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

        values = source.config
        if str(values.get("model_type", "")).lower() == "qwen2_5_omni":
            values = values.get("thinker_config") or {}
        config = Qwen2_5OmniThinkerConfig.from_dict(values)
        with torch.device("meta"):
            return Qwen2_5OmniThinkerForConditionalGeneration(config)
    if source.family == "humanomni":  # its tower configs: embedded in a preset, else read beside the folder
        try:
            humanomni = importlib.import_module("ecr.models.humanomni")
        except ModuleNotFoundError as err:
            if err.name and not err.name.startswith("ecr.models.humanomni"):
                raise
            raise ConfigError(
                f"{source.origin}: the humanomni family (ecr.models.humanomni) is not available in this "
                "version of ecr yet"
            ) from err
        return humanomni.skeleton(source.folder or source.config, device="meta")
    raise ConfigError(f"{source.origin}: no skeleton builder for family {source.family!r}")


def family_backbone(source: ModelSource, policy: PolicyConfig) -> Any:
    """The family's backbone object (not loaded): its LoRA targets and quantisation skips are `ecr`'s own."""
    from ecr.models.registry import backbone_class

    try:
        cls = backbone_class(source.family)
    except ConfigError as err:
        raise ConfigError(f"{source.origin}: backbone {source.family!r} is not registered in this ecr ({err})") from err
    return cls(policy)
