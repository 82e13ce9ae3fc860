"""Configuration of the policy (the model being trained): which backbone, where its weights live, how it is
adapted (LoRA), quantised (bitsandbytes) and which parts are frozen.

Plain dataclasses with field docstrings: LightningCLI turns them into `--model.policy.*` options with help,
and `asdict` makes them checkpoint-safe hyper-parameters (no custom classes in the pickle).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from ecr.errors import ConfigError
from ecr.prompts import DEFAULT_INSTRUCTION


@dataclass
class LoraSettings:
    """LoRA adapters through peft."""

    enabled: bool = True
    """Train LoRA adapters instead of the full language model."""
    r: int = 8
    """Adapter rank."""
    alpha: int = 16
    """LoRA alpha (the update is scaled by alpha / r)."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    target_modules: str | list[str] | None = None
    """peft target modules: a regex (full match on module names) or a list of name suffixes. None = the
    backbone's default: the attention and MLP projections of the language model only (never the towers)."""
    modules_to_save: list[str] = field(default_factory=list)
    """Extra modules trained fully and saved with the adapter (e.g. a projector)."""


@dataclass
class InputSettings:
    """How samples become model inputs (shared by training and generation collators)."""

    instruction: str = DEFAULT_INSTRUCTION
    """The user instruction (the paper's evaluation prompt by default; ONE template for every stage). A `{label}`
    in it is replaced by each clip's label: how `ecr explain` has a policy explain a clip GIVEN its label."""
    system: str | None = None
    """Optional system message (None = the chat template's default)."""
    use_video: bool = True
    """Feed the clip's frames."""
    use_audio: bool = True
    """Feed the clip's audio track."""
    audio_in_video: bool = True
    """Interleave the clip's audio with its frames on one timeline (Qwen2.5-Omni audio-in-video, TMRoPE: as the
    released checkpoints were trained on clips with sound; needs use_video and use_audio). false = the video,
    then the audio as a separate block with positions after the video's (the sequential layout)."""
    min_pixels: int = 56 * 56
    """Lower bound of pixels per frame after resizing (Qwen2-VL video processor `shortest_edge`)."""
    max_pixels: int = 448 * 448
    """Upper bound of pixels per frame after resizing (`longest_edge`); small values keep tiny models fast."""
    max_length: int | None = None
    """Longest token sequence allowed; a longer sample raises (never truncated: media/target would be cut)."""


@dataclass
class PolicyConfig:
    """The policy model: backbone family, weights, precision, adaptation and freezing."""

    backbone: str = "qwen2_5_omni"
    """Registered backbone name (`ecr.models.registry.BACKBONES`): qwen2_5_omni | causal_lm | humanomni."""
    model: str = "Qwen/Qwen2.5-Omni-3B"
    """Local folder or hub model id. Ids resolve in the local HF cache only; nothing is downloaded."""
    revision: str | None = None
    """Hub revision to resolve in the cache (None = the cached `main`)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    """Weight dtype at load time (mixed precision itself comes from the Trainer's `precision`)."""
    attn_implementation: str | None = None
    """`eager`, `sdpa`, `flash_attention_2`, … (None = transformers' default)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward (non-reentrant) to save memory."""
    freeze_vision: bool = True
    """Keep the vision tower frozen (unfrozen: fully trained; with LoRA it joins `modules_to_save`)."""
    freeze_audio: bool = True
    """Keep the audio tower frozen (same rules as `freeze_vision`)."""
    quantization: Literal["none", "8bit", "4bit"] = "none"
    """bitsandbytes weight quantisation of the language model (4bit = QLoRA, GPU only for training)."""
    quantize_towers: bool = False
    """Also quantise the vision/audio towers (default: they stay in `dtype`)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA settings."""
    adapter: str | None = None
    """Existing PEFT adapter folder to start from (e.g. the SFT adapter for GRPO); trained further."""
    inputs: InputSettings = field(default_factory=InputSettings)
    """Prompt and media settings."""
    backbone_options: dict[str, Any] = field(default_factory=dict)
    """Family-specific keyword options of the backbone class (e.g. humanomni: `vision_tower`, `audio_tower`,
    `router`, `towers_from_checkpoint`); saved with the policy, so export and predict rebuild the same model."""

    def __post_init__(self) -> None:
        # folders given as Path objects in Python: keep strings so `to_dict()` stays weights_only-loadable
        self.model = os.fspath(self.model)
        self.adapter = os.fspath(self.adapter) if self.adapter is not None else None
        if isinstance(self.lora, dict):
            self.lora = LoraSettings(**self.lora)
        if isinstance(self.inputs, dict):
            self.inputs = InputSettings(**self.inputs)
        if self.quantization != "none" and not self.lora.enabled:
            raise ConfigError(
                f"policy.quantization={self.quantization!r} needs policy.lora.enabled=true "
                "(quantised weights cannot be trained directly)"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/checkpoint-safe dict (round-trips through `PolicyConfig.from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: PolicyConfig | dict[str, Any]) -> PolicyConfig:
        if isinstance(data, PolicyConfig):
            return data
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"policy: unknown field(s) {unknown}; expected some of {sorted(known)}")
        return cls(**data)
