"""Policy models: configuration, the backbone interface and registry, and the backbone families.

`load_policy(PolicyConfig(backbone="qwen2_5_omni", model=...))` returns a loaded backbone (see
`ecr.models.backbone.PolicyBackbone`). Exports load lazily (`ecr.lazy`): importing this package, or reading
`PolicyConfig`, does not import torch; the backbone interface and the registry do, the families only when built.
"""

from ecr.lazy import lazy_exports

_EXPORTS = {
    "EncodedPrompt": "backbone",
    "PolicyBackbone": "backbone",
    "gather_logprobs": "scoring",
    "InputSettings": "config",
    "LoraSettings": "config",
    "PolicyConfig": "config",
    "BACKBONES": "registry",
    "build_backbone": "registry",
    "load_policy": "registry",
    "register_backbone": "registry",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
