"""The HumanOmni family (R1-Omni, ERV and HumanOmni checkpoints): config, model, processor, backbone.

`skeleton("humanomni-0.5b")` builds the real-size model on the meta device (no weights);
`load_pretrained(folder)` loads a released folder offline (tower folders from its config, or the checkpoint's
stored copies with `towers_from_checkpoint=True`); the `humanomni` backbone runs it in every stage.
See docs/humanomni.md. Exports load lazily (no torch import until used).
"""

from ecr.lazy import lazy_exports

_EXPORTS = {
    "HumanOmniQwen2Config": "config",
    "PRESETS": "config",
    "preset": "config",
    "HumanOmniQwen2ForCausalLM": "model",
    "skeleton": "loading",
    "load_pretrained": "loading",
    "HumanOmniCollator": "processor",
    "HumanOmniProcessor": "processor",
    "HumanOmniBackbone": "backbone",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
