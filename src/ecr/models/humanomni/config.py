"""The HumanOmni checkpoint config (`model_type: "HumanOmni_qwen2"`) and the released 0.5B/7B values.

`HumanOmniQwen2Config` is a local `Qwen2Config` subclass registered with `AutoConfig` under the mixed-case
model type of the released `config.json` (never `trust_remote_code`). It adds the multimodal keys the released
files carry (`mm_vision_tower`, `mm_projector_type`, …) and a few `ecr` keys the official code hard-codes:

- `router_path`: the router's BERT (official: a hard-coded cluster path); `router_gate_size` (3584 for both sizes);
- `vision_config` / `audio_config` / `router_config`: the towers' own configs, embedded by `resolve_towers`
  (read from each tower folder's `config.json`, the tower class chosen by its `model_type`, never by a substring
  of the path), so that building the model needs no folder and a saved model folder is self-describing;
- `towers_from_checkpoint`: take SigLIP/Whisper from the checkpoint's stored copies (no tower folders needed).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import Qwen2Config

from ecr.errors import ConfigError
from ecr.hub import resolve_local_model

MODEL_TYPE = "HumanOmni_qwen2"
# Tower config `model_type` → the transformers class HumanOmni builds for it.
TOWER_CLASSES = {
    "vision": {"siglip_vision_model": "SiglipVisionModel", "siglip": "SiglipVisionModel"},
    "audio": {"whisper": "WhisperForAudioClassification"},
    "router": {"bert": "BertModel"},
}


@strict
class HumanOmniQwen2Config(Qwen2Config):
    """Qwen2 LM config + HumanOmni's multimodal keys (see the module docstring)."""

    model_type = MODEL_TYPE

    mm_vision_tower: str | None = None
    mm_audio_tower: str | None = None
    mm_hidden_size: int = 768
    mm_projector_type: str = "all_in_one_small"
    mm_audio_projector_type: str | None = None
    audio_hidden_size: int = 1280
    mm_vision_select_layer: int = -2
    mm_vision_select_feature: str = "patch"
    mm_use_x_start_end: bool = True
    num_frames: int = 8
    router_path: str = "bert-base-uncased"
    router_gate_size: int = 3584
    towers_from_checkpoint: bool = False
    slow_fast_compressor: bool = False  # HumanOmni-7B under the original HumanOmni code only (spec §3.8)
    vision_config: dict | None = None
    audio_config: dict | None = None
    router_config: dict | None = None


def register() -> None:
    """Register the config and model classes with the Auto factories (idempotent, local, no remote code)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from ecr.models.humanomni.model import HumanOmniQwen2ForCausalLM

    try:
        AutoConfig.register(MODEL_TYPE, HumanOmniQwen2Config)
        AutoModelForCausalLM.register(HumanOmniQwen2Config, HumanOmniQwen2ForCausalLM)
    except ValueError:  # already registered
        pass


def tower_folder(ref: str, checkpoint: Path | None, what: str) -> Path:
    """A tower reference as a folder: relative to the checkpoint folder, a local folder, or a cached hub id."""
    if checkpoint is not None and not Path(ref).is_absolute() and (checkpoint / ref).is_dir():
        return (checkpoint / ref).resolve()
    return resolve_local_model(ref, what=what).resolve()


def read_tower_config(folder: Path, kind: str, what: str) -> dict[str, Any]:
    """The tower's own config.json, checked to name a tower class HumanOmni supports."""
    try:
        data = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{what}: cannot read {folder / 'config.json'}: {err}") from err
    if data.get("model_type") == "siglip" and isinstance(data.get("vision_config"), dict):
        data = dict(data["vision_config"], model_type="siglip_vision_model")  # a full SigLIP (text + vision) folder
    if data.get("model_type") not in TOWER_CLASSES[kind]:
        raise ConfigError(
            f"{what}: {folder / 'config.json'} has model_type {data.get('model_type')!r}; expected one of "
            f"{sorted(TOWER_CLASSES[kind])}"
        )
    return data


def resolve_towers(
    config: HumanOmniQwen2Config,
    checkpoint: Path | None = None,
    *,
    vision_tower: str | None = None,
    audio_tower: str | None = None,
    router: str | None = None,
) -> dict[str, Path]:
    """Embed the tower configs into `config` (in place) and return the folders whose weights must be loaded.

    Overrides win over the config's paths (`mm_vision_tower`, `mm_audio_tower`, `router_path`). A config that
    already embeds a tower's config (and `towers_from_checkpoint` for the towers) needs no folder for it.
    """
    refs = {
        "vision": (vision_tower, "mm_vision_tower", "vision_config"),
        "audio": (audio_tower, "mm_audio_tower", "audio_config"),
        "router": (router, "router_path", "router_config"),
    }
    folders: dict[str, Path] = {}
    for kind, (override, key, embedded) in refs.items():
        ref = override or getattr(config, key)
        from_checkpoint = kind != "router" and config.towers_from_checkpoint
        if getattr(config, embedded) is not None and override is None and (from_checkpoint or kind == "router"):
            continue  # self-describing: weights come from the checkpoint
        if ref is None:
            raise ConfigError(f"config.json: {key} is missing (the {kind} tower's folder or hub id)")
        folder = tower_folder(ref, checkpoint, what=f"config.json {key}")
        setattr(config, embedded, read_tower_config(folder, kind, f"config.json {key}"))
        setattr(config, key, str(folder))
        if not from_checkpoint and kind != "router":  # BERT comes from the checkpoint when stored there
            folders[kind] = folder
    return folders


# ------------------------------------------------------------------------------------- released values
SIGLIP_BASE_224 = {
    "model_type": "siglip_vision_model", "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "image_size": 224, "patch_size": 16, "num_channels": 3, "layer_norm_eps": 1e-6,
    "hidden_act": "gelu_pytorch_tanh",
}  # fmt: skip
SIGLIP_SO400M_384 = {
    "model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
    "num_attention_heads": 16, "image_size": 384, "patch_size": 14, "num_channels": 3, "layer_norm_eps": 1e-6,
    "hidden_act": "gelu_pytorch_tanh",
}  # fmt: skip
WHISPER_LARGE_V3 = {
    "model_type": "whisper", "d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120, "decoder_layers": 32, "decoder_attention_heads": 20, "decoder_ffn_dim": 5120,
    "num_mel_bins": 128, "max_source_positions": 1500, "max_target_positions": 448, "vocab_size": 51866,
    "classifier_proj_size": 256, "num_labels": 2,
}  # fmt: skip
BERT_BASE_UNCASED = {
    "model_type": "bert", "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
}  # fmt: skip
_MM_0_5B = {
    "mm_vision_tower": "google/siglip-base-patch16-224", "mm_audio_tower": "openai/whisper-large-v3",
    "mm_hidden_size": 768, "mm_projector_type": "all_in_one_small", "mm_audio_projector_type": "mlp2x_gelu",
    "audio_hidden_size": 1280, "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
    "mm_use_x_start_end": True, "num_frames": 8,
}  # fmt: skip
PRESETS: dict[str, dict[str, Any]] = {
    # R1-Omni-0.5B / HumanOmni-0.5B / ERV-0.5B (reference spec §7.1)
    "humanomni-0.5b": {
        "model_type": MODEL_TYPE, "architectures": ["HumanOmniQwen2ForCausalLM"], "hidden_size": 896,
        "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "vocab_size": 151936, "tie_word_embeddings": True, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
        "max_position_embeddings": 32768, "max_window_layers": 21, "use_sliding_window": False,
        "sliding_window": None, "hidden_act": "silu", "bos_token_id": 151643, "eos_token_id": 151645,
        **_MM_0_5B, "vision_config": SIGLIP_BASE_224, "audio_config": WHISPER_LARGE_V3,
        "router_config": BERT_BASE_UNCASED, "towers_from_checkpoint": True,
    },
    # HumanOmni-7B / ERV-7B: Qwen2.5-7B values (inferred in the spec §7.3; check against the real file)
    "humanomni-7b": {
        "model_type": MODEL_TYPE, "architectures": ["HumanOmniQwen2ForCausalLM"], "hidden_size": 3584,
        "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
        "vocab_size": 152064, "tie_word_embeddings": False, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
        "max_position_embeddings": 32768, "max_window_layers": 28, "use_sliding_window": False,
        "sliding_window": None, "hidden_act": "silu", "bos_token_id": 151643, "eos_token_id": 151645,
        **_MM_0_5B, "mm_vision_tower": "google/siglip-so400m-patch14-384", "mm_hidden_size": 1152,
        "mm_projector_type": "all_in_one", "vision_config": SIGLIP_SO400M_384, "audio_config": WHISPER_LARGE_V3,
        "router_config": BERT_BASE_UNCASED, "towers_from_checkpoint": True,
    },
}  # fmt: skip


def preset(name: str) -> dict[str, Any]:
    """A copy of a released config's values (no weights)."""
    if name not in PRESETS:
        raise ConfigError(f"humanomni preset {name!r} is unknown; expected one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def config_from(data: dict[str, Any] | str | Path) -> HumanOmniQwen2Config:
    """A config from a dict, a preset name, a `config.json` file or a checkpoint folder (no tower resolution)."""
    if isinstance(data, dict):
        return HumanOmniQwen2Config.from_dict(copy.deepcopy(data))
    if isinstance(data, str) and data in PRESETS:
        return HumanOmniQwen2Config.from_dict(preset(data))
    path = Path(data)
    if not path.exists():
        raise ConfigError(f"humanomni config: {data!r} is neither a preset {sorted(PRESETS)} nor a file or folder")
    file = path / "config.json" if path.is_dir() else path
    try:
        raw = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"humanomni config: cannot read {file}: {err}") from err
    if raw.get("model_type") != MODEL_TYPE:
        raise ConfigError(f"{file}: model_type is {raw.get('model_type')!r}, expected {MODEL_TYPE!r}")
    return HumanOmniQwen2Config.from_dict(raw)
