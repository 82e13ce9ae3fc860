"""Backbone registry: the `backbone:` name in a config selects the family that loads the policy.

A family registers itself with `@register_backbone("name")`; `load_policy` builds one (cheap) and, unless
told otherwise, loads its weights. Built-in families are imported on first lookup so that importing
`ecr.models` stays light.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from ecr.errors import ConfigError
from ecr.models.backbone import PolicyBackbone
from ecr.models.config import PolicyConfig

BACKBONES: dict[str, type] = {}
_BUILTIN = {
    "qwen2_5_omni": "ecr.models.qwen2_5_omni",
    "causal_lm": "ecr.models.causal_lm",
    "humanomni": "ecr.models.humanomni.backbone",
}
T = TypeVar("T", bound=type)


def register_backbone(name: str) -> Callable[[T], T]:
    """Class decorator registering a backbone family under `name`."""

    def wrap(cls: T) -> T:
        BACKBONES[name] = cls
        return cls

    return wrap


def backbone_class(name: str) -> type:
    if name not in BACKBONES and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in BACKBONES:
        raise ConfigError(
            f"policy.backbone: unknown backbone {name!r}; known: {sorted(set(BACKBONES) | set(_BUILTIN))}"
        )
    return BACKBONES[name]


def build_backbone(config: PolicyConfig | dict[str, Any]) -> PolicyBackbone:
    """The backbone object for `config`, weights not loaded yet (cheap)."""
    config = PolicyConfig.from_dict(config)
    cls = backbone_class(config.backbone)
    accepted = [p.name for p in inspect.signature(cls).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(config.backbone_options) - set(accepted))
    if unknown:
        raise ConfigError(f"policy.backbone_options: {config.backbone!r} takes none of {unknown}; it takes {accepted}")
    backbone = cls(config, **config.backbone_options)
    if not isinstance(backbone, PolicyBackbone):  # a registered class missing part of the protocol
        raise ConfigError(f"policy.backbone: {type(backbone).__name__} does not implement PolicyBackbone")
    return backbone


def load_policy(config: PolicyConfig | dict[str, Any], device: Any = None) -> PolicyBackbone:
    """Build the backbone of `config` and load its weights (quantisation, LoRA, freezing included)."""
    backbone = build_backbone(config)
    backbone.load(device)
    return backbone
