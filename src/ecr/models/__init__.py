"""Policy models: configuration, the backbone interface and registry, and the backbone families.

`load_policy(PolicyConfig(backbone="qwen2_5_omni", model=...))` returns a loaded backbone (see
`ecr.models.backbone.PolicyBackbone`). Families import lazily: importing this package is cheap.
"""

from ecr.models.backbone import EncodedPrompt, PolicyBackbone, gather_logprobs
from ecr.models.config import InputSettings, LoraSettings, PolicyConfig
from ecr.models.registry import BACKBONES, build_backbone, load_policy, register_backbone

__all__ = [
    "BACKBONES",
    "EncodedPrompt",
    "InputSettings",
    "LoraSettings",
    "PolicyBackbone",
    "PolicyConfig",
    "build_backbone",
    "gather_logprobs",
    "load_policy",
    "register_backbone",
]
