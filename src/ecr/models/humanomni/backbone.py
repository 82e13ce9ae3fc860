"""The `humanomni` backbone family: R1-Omni / ERV / HumanOmni checkpoints behind the `PolicyBackbone` Protocol.

Loading, quantisation, freezing, LoRA, scoring (KV-cache prefix sharing, chunked log-probs) and generation are
`HFBackbone`'s; this family supplies the model loader (`load_pretrained`: tower folders, no silent
re-initialisation), the collator and the encode-once prompt: `encode_prompt` runs SigLIP, BERT's router, the
projectors and Whisper once and returns the spliced embeddings with plain 1-D positions (left padding aware).

Frozen and never quantised: the two towers and BERT (`tower_prefixes`); the projectors, the router gate and
the LM head also stay in `dtype` under 8/4-bit. LoRA defaults to the language model's projections only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from ecr.errors import ConfigError
from ecr.models.backbone import CollateMode, EncodedPrompt
from ecr.models.config import PolicyConfig
from ecr.models.hf import HFBackbone, module_regex
from ecr.models.humanomni.config import HumanOmniQwen2Config, config_from, resolve_towers
from ecr.models.humanomni.loading import HumanOmniLoader
from ecr.models.humanomni.processor import HumanOmniCollator, HumanOmniProcessor, load_processor
from ecr.models.registry import register_backbone

if TYPE_CHECKING:
    from ecr.models.humanomni.model import HumanOmniQwen2ForCausalLM

_LM_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Modules whose parameters shape `encode_prompt`'s output (trainable ones make a cached encoding stale).
ENCODING_MODULES = (
    "model.embed_tokens", "model.vision_tower", "model.mm_projector", "model.bert_model", "model.bert_gate",
    "model.audio_tower", "model.audio_projector",
)  # fmt: skip


@register_backbone("humanomni")
class HumanOmniBackbone(HFBackbone):
    """HumanOmni (Qwen2 + SigLIP + Whisper + BERT router). Tower options override the checkpoint config."""

    name = "humanomni"
    tower_prefixes = {"vision": "model.vision_tower", "audio": "model.audio_tower", "router": "model.bert_model"}
    default_lora_targets = module_regex("model.layers", _LM_PROJECTIONS)
    always_skip_quantization = ("lm_head", "model.mm_projector", "model.bert_gate", "model.audio_projector")

    def __init__(
        self,
        config: PolicyConfig,
        *,
        vision_tower: str | None = None,
        audio_tower: str | None = None,
        router: str | None = None,
        towers_from_checkpoint: bool | None = None,
    ) -> None:
        super().__init__(config)
        if not config.freeze_vision:
            raise ConfigError(
                "policy.freeze_vision=false: HumanOmni's SigLIP tower runs without gradients (as in the released "
                "model), so it could never train; keep it frozen"
            )
        self.tower_options: dict[str, Any] = {
            "vision_tower": vision_tower,
            "audio_tower": audio_tower,
            "router": router,
            "towers_from_checkpoint": towers_from_checkpoint,
        }
        self._hf_config: HumanOmniQwen2Config | None = None

    @property
    def model_class(self) -> HumanOmniLoader:
        return HumanOmniLoader(**self.tower_options)

    @property
    def humanomni(self) -> HumanOmniQwen2ForCausalLM:
        """The loaded model, typed (`model_class` loads it; the generic base types it `PreTrainedModel`)."""
        return cast("HumanOmniQwen2ForCausalLM", self.base_model)

    def model_config(self) -> HumanOmniQwen2Config:
        """The loaded model's config, else the folder's with its towers resolved (no weights read)."""
        if self.model is not None:
            return self.humanomni.config
        if self._hf_config is None:
            cfg = config_from(self.path)
            opts = self.tower_options
            if opts["towers_from_checkpoint"] is not None:
                cfg.towers_from_checkpoint = opts["towers_from_checkpoint"]
            resolve_towers(
                cfg,
                self.path,
                vision_tower=opts["vision_tower"],
                audio_tower=opts["audio_tower"],
                router=opts["router"],
            )
            self._hf_config = cfg
        return self._hf_config

    def load_processor(self, path: Path) -> HumanOmniProcessor:
        return load_processor(path, self.model_config(), router=self.tower_options["router"])

    def collator(self, mode: CollateMode) -> HumanOmniCollator:
        inp = self.config.inputs
        cfg = self.model_config()
        return HumanOmniCollator(
            **self.chat_settings(mode),
            use_video=inp.use_video,
            use_audio=inp.use_audio,
            num_frames=int(cfg.num_frames or 8),
            x_start_end=bool(cfg.mm_use_x_start_end),
        )

    def encode_prompt(self, batch: Mapping[str, Any]) -> EncodedPrompt:
        """Towers, router and projectors run once; their tokens replace the placeholders (1-D positions)."""
        spliced = self.humanomni.splice(
            batch["input_ids"], batch["attention_mask"], batch.get("images"), batch.get("audios"), batch.get("prompts")
        )
        # media rows hold the pad id: a valid token for generation's logits processors (the embeddings rule)
        ids = spliced.input_ids.masked_fill(spliced.input_ids < 0, self.tokenizer.pad_token_id)
        positions = spliced.position_ids  # [B, P]
        return EncodedPrompt(
            input_ids=ids,
            inputs_embeds=spliced.inputs_embeds,
            attention_mask=spliced.attention_mask,
            position_ids=positions[None],
            next_position=positions[:, -1] + 1,
        )

    def prompt_encoding_is_trainable(self) -> bool:
        model = self.base_model
        return any(p.requires_grad for m in ENCODING_MODULES for p in model.get_submodule(m).parameters())

    def _decoder(self) -> torch.nn.Module:
        return self.humanomni.model

    def _decoder_positions(self, position_ids: torch.Tensor) -> torch.Tensor:
        return position_ids[0]
