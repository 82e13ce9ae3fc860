"""Released architectures as config values (no weights): what `ecr model info PRESET` builds on the meta device.

Only the values that decide parameter shapes are listed; everything else takes transformers' defaults (which
for Qwen2.5-Omni are NOT the released sizes: its default vision tower is 3584 wide, the released one 1280).
A downloaded folder's own `config.json` is authoritative (`ecr model info PATH`), and `ecr model check PATH`
compares a download with the layout these values produce.

Sources:
- Qwen2.5-Omni-7B thinker: language model = Qwen2.5-7B (vocabulary 152064, untied head: NVIDIA Megatron-Bridge's
  Qwen2.5-Omni provider docs, `share_embeddings_and_output_weights: False`, `vocab_size: 152064`); vision tower =
  Qwen2.5-VL-7B's (`Qwen/Qwen2.5-VL-7B-Instruct` config.json: depth 32, hidden 1280, MLP 3420, 16 heads,
  out 3584); audio tower = Whisper-large-v3 encoder (d_model 1280, 32 layers, 20 heads, FFN 5120, 128 mel bins)
  projected to 3584, as in the thinker configs of published Qwen2.5-Omni-7B fine-tunes.
- Qwen2.5-Omni-3B thinker: language model = Qwen2.5-3B sizes (hidden 2048, MLP 11008, 36 layers, 16 heads,
  2 KV heads, vocabulary 151936), same vision tower with out 2048 (as Qwen2.5-VL-3B), audio tower projected
  to 2048 (thinker config of a published Qwen2.5-Omni-3B fine-tune). The head is untied: a tied 3B thinker
  would total ≈ 4.4 B parameters, an untied one ≈ 4.7 B, which with the talker and token2wav matches the
  released 5.5 B; `ecr model check` on a download settles it.

The HumanOmni presets (`humanomni-0.5b`, `humanomni-7b`) are that family's own (`ecr.models.humanomni.PRESETS`,
with the tower configs embedded); `ecr model info` reads them from there.
"""

from __future__ import annotations

import copy
from typing import Any

from ecr.errors import ConfigError

_OMNI_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "in_channels": 3,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
}
_OMNI_AUDIO = {
    "d_model": 1280,
    "encoder_layers": 32,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "num_mel_bins": 128,
    "max_source_positions": 1500,
    "n_window": 100,
}


def _omni_thinker(text: dict[str, Any], hidden: int) -> dict[str, Any]:
    return {
        "model_type": "qwen2_5_omni_thinker",
        "architectures": ["Qwen2_5OmniThinkerForConditionalGeneration"],
        "tie_word_embeddings": False,  # transformers ties the thinker's head from this top-level flag
        "position_id_per_seconds": 25,
        "seconds_per_chunk": 2,
        "text_config": {
            "model_type": "qwen2_5_omni_text",
            "rope_theta": 1_000_000.0,
            "rms_norm_eps": 1e-6,
            "max_position_embeddings": 32768,
            "tie_word_embeddings": False,
            **text,
            "hidden_size": hidden,
        },
        "vision_config": {**_OMNI_VISION, "out_hidden_size": hidden},
        "audio_config": {**_OMNI_AUDIO, "output_dim": hidden},
    }


PRESETS: dict[str, dict[str, Any]] = {
    "qwen2.5-omni-3b": _omni_thinker(
        {
            "vocab_size": 151936,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
        },
        hidden=2048,
    ),
    "qwen2.5-omni-7b": _omni_thinker(
        {
            "vocab_size": 152064,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
        },
        hidden=3584,
    ),
}


HUMANOMNI_PRESETS = ("humanomni-0.5b", "humanomni-7b")  # values in ecr.models.humanomni.PRESETS
PRESET_NAMES = (*PRESETS, *HUMANOMNI_PRESETS)


def preset_config(name: str) -> dict[str, Any]:
    """A copy of the `config.json` values of preset `name` (case-insensitive)."""
    key = name.strip().lower()
    if key in HUMANOMNI_PRESETS:
        try:
            from ecr.models.humanomni.config import preset
        except ModuleNotFoundError as err:
            if err.name and not err.name.startswith("ecr.models.humanomni"):
                raise
            raise ConfigError(
                f"preset {key}: the humanomni family (ecr.models.humanomni) is not available in this version of ecr"
            ) from err
        return preset(key)
    if key not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; known presets: {', '.join(PRESET_NAMES)}")
    return copy.deepcopy(PRESETS[key])
