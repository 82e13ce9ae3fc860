"""Building and loading HumanOmni models: the weight-free skeleton and `from_pretrained` of a released folder.

The official loader builds the towers from hard-coded or config paths and silently re-initialises what it
cannot find. Here every tensor has one source, and a missing one is an error:
- the checkpoint's own tensors (LLM, projectors, router gate, BERT, and the stored tower copies);
- unless `towers_from_checkpoint`, SigLIP and Whisper are then overwritten from their tower folders
  (`mm_vision_tower`, `mm_audio_tower`: the official behaviour, public fp32 weights);
- BERT comes from the checkpoint; only a checkpoint without `model.bert_model.*` takes it from `router_path`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from ecr.errors import ConfigError
from ecr.models.humanomni.config import (
    HumanOmniQwen2Config,
    config_from,
    register,
    resolve_towers,
    tower_folder,
)
from ecr.models.humanomni.model import HumanOmniQwen2ForCausalLM

if TYPE_CHECKING:
    from transformers import PreTrainedModel

TOWER_PREFIXES = {
    "vision": "model.vision_tower.vision_tower.",
    "audio": "model.audio_tower.audio_tower.",
    "router": "model.bert_model.",
}
# Stored but unused by every released code path (the HO slow-fast compressor's two Linear layers).
IGNORED_PREFIXES = ("model.feature_compressor.",)


def skeleton(config: dict | str | Path, *, device: torch.device | str = "meta") -> torch.nn.Module:
    """The full-size model without weights (meta device by default): a config dict, a preset name
    (`humanomni-0.5b`, `humanomni-7b`), a `config.json` or a checkpoint folder (tower configs read from the
    tower folders unless embedded)."""
    cfg = config_from(config)
    folder = Path(config) if isinstance(config, (str, Path)) and Path(config).is_dir() else None
    if cfg.vision_config is None or cfg.audio_config is None or cfg.router_config is None:
        resolve_towers(cfg, folder)
    with torch.device(device):
        return HumanOmniQwen2ForCausalLM(cfg)


def _load_tower(model: HumanOmniQwen2ForCausalLM, kind: str, folder: Path) -> None:
    """Copy a tower's public weights from its folder into the model (the tower's own class reads them)."""
    from transformers import BertModel, SiglipVisionModel, WhisperForAudioClassification
    from transformers.utils import logging as hf_logging

    target = {
        "vision": model.model.vision_tower.vision_tower.vision_model,
        "audio": model.model.audio_tower.audio_tower,
        "router": model.model.bert_model,
    }[kind]
    cls: type[PreTrainedModel] = {
        "vision": SiglipVisionModel,
        "audio": WhisperForAudioClassification,
        "router": BertModel,
    }[kind]
    # A full SigLIP (text + vision) or Whisper (encoder + decoder) folder makes transformers list the other half
    # as unexpected: expected here, and coverage of what we need is checked below instead.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        source = cls.from_pretrained(folder, local_files_only=True, dtype=torch.float32).state_dict()
    finally:
        hf_logging.set_verbosity(verbosity)
    if kind == "audio":  # the classifier head of whisper-large-v3 is random and never used: keep the stored one
        source = {k: v for k, v in source.items() if k.startswith("encoder.")}
    own = target.state_dict()
    missing = [k for k in own if (kind != "audio" or k.startswith("encoder.")) and k not in source]
    if missing:
        raise ConfigError(f"{folder}: the {kind} tower lacks {len(missing)} tensors, e.g. {missing[:3]}")
    with torch.no_grad():
        for key, value in source.items():
            if key in own:
                own[key].copy_(value.to(own[key].dtype))


def load_pretrained(
    path: str | Path,
    *,
    vision_tower: str | None = None,
    audio_tower: str | None = None,
    router: str | None = None,
    towers_from_checkpoint: bool | None = None,
    **hf_kwargs: Any,
) -> HumanOmniQwen2ForCausalLM:
    """A released (or `ecr`-saved) HumanOmni folder as a model, every tensor accounted for (module docstring).

    `vision_tower` / `audio_tower` / `router` override the config's folders or hub ids (resolved in the local
    HF cache only); `towers_from_checkpoint` overrides the config flag. `hf_kwargs` go to `from_pretrained`
    (dtype, quantization_config, device_map, …).
    """
    register()
    folder = Path(path)
    config: HumanOmniQwen2Config = config_from(folder)
    if towers_from_checkpoint is not None:
        config.towers_from_checkpoint = towers_from_checkpoint
    folders = resolve_towers(config, folder, vision_tower=vision_tower, audio_tower=audio_tower, router=router)
    hf_kwargs.setdefault("local_files_only", True)
    loaded = HumanOmniQwen2ForCausalLM.from_pretrained(folder, config=config, output_loading_info=True, **hf_kwargs)
    # transformers annotates the model alone; output_loading_info=True returns (model, loading info)
    model, info = cast("tuple[HumanOmniQwen2ForCausalLM, dict[str, list[str]]]", loaded)
    missing = [k for k in info["missing_keys"] if not any(k.startswith(p) for p in IGNORED_PREFIXES)]
    unexpected = [k for k in info["unexpected_keys"] if not any(k.startswith(p) for p in IGNORED_PREFIXES)]
    if unexpected:
        raise ConfigError(f"{folder}: {len(unexpected)} checkpoint tensors fit no module, e.g. {unexpected[:3]}")
    for kind, prefix in TOWER_PREFIXES.items():
        absent = [k for k in missing if k.startswith(prefix)]
        missing = [k for k in missing if not k.startswith(prefix)]
        if absent and kind not in folders:
            if kind != "router":
                raise ConfigError(
                    f"{folder}: the checkpoint has no {kind} tower tensors ({absent[0]}, …) and "
                    "towers_from_checkpoint is set: point mm_vision_tower/mm_audio_tower at the tower folders"
                )
            folders["router"] = tower_folder(config.router_path, folder, what="config.json router_path")
    if missing:
        raise ConfigError(
            f"{folder}: {len(missing)} tensors are missing from the checkpoint (they would be random), e.g. "
            f"{missing[:3]}"
        )
    for kind, tower in folders.items():
        _load_tower(model, kind, tower)
    model.eval()
    return model


class HumanOmniLoader:
    """`from_pretrained` with fixed tower options: what `HFBackbone.load` calls as its `model_class`."""

    def __init__(self, **options: Any) -> None:
        self.options = options

    def from_pretrained(self, path: str | Path, **hf_kwargs: Any) -> HumanOmniQwen2ForCausalLM:
        return load_pretrained(path, **self.options, **hf_kwargs)
