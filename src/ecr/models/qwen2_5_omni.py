"""Qwen2.5-Omni backbone: the thinker (video + audio + text → text) and its processor.

Only the thinker is loaded (`Qwen2_5OmniThinkerForConditionalGeneration`; the talker/token2wav weights of a
full Omni checkpoint are skipped by transformers). Towers: `model.visual` and `model.audio_tower`, frozen by
default and kept out of 8-bit quantisation; LoRA targets the language model's attention + MLP projections.

Encode-once: `encode_prompt` runs the vision and audio encoders a single time, scatters their features into
the prompt embeddings and computes the 3-D m-RoPE positions; `generate` and `token_logprobs` then run on
those embeddings (completion tokens continue at `max(prompt position) + 1`, exactly what the model does when
it sees the full sequence — tested to give identical log-probs).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ecr.data.collate import CollateMode, OmniCollator, check_media_tokens, video_token_counts
from ecr.models.backbone import EncodedPrompt
from ecr.models.hf import HFBackbone, module_regex
from ecr.models.registry import register_backbone

_LM_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@register_backbone("qwen2_5_omni")
class QwenOmniBackbone(HFBackbone):
    """Qwen2.5-Omni thinker (3B/7B, or the tiny one from `ecr model tiny`)."""

    name = "qwen2_5_omni"
    tower_prefixes = {"vision": "model.visual", "audio": "model.audio_tower"}
    default_lora_targets = module_regex("model.language_model.layers", _LM_PROJECTIONS)

    @property
    def model_class(self) -> Any:  # imported lazily: `--print_config` must not import the model zoo
        from transformers import Qwen2_5OmniThinkerForConditionalGeneration

        return Qwen2_5OmniThinkerForConditionalGeneration

    def load_processor(self, path: Path) -> Any:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, local_files_only=True)

    def collator(self, mode: CollateMode) -> OmniCollator:
        inp = self.config.inputs
        return OmniCollator(
            processor=self.processor,
            mode=mode,
            instruction=inp.instruction,
            system=inp.system,
            max_length=inp.max_length,
            use_video=inp.use_video,
            use_audio=inp.use_audio,
            min_pixels=inp.min_pixels,
            max_pixels=inp.max_pixels,
        )

    def check_media(self, batch: Mapping[str, Any]) -> None:
        """Placeholders vs features with the MODEL's geometry (the thinker checks video only, audio never)."""
        thinker = self.base_model
        ids = batch["input_ids"]
        clip_ids = batch.get("meta", {}).get("ids") or [f"sample {i}" for i in range(ids.shape[0])]
        video = audio = None
        if batch.get("video_grid_thw") is not None:
            video = video_token_counts(batch["video_grid_thw"], thinker.config.vision_config.spatial_merge_size)
        if batch.get("feature_attention_mask") is not None:
            lengths = batch["feature_attention_mask"].sum(-1)
            audio = thinker.model.audio_tower._get_feat_extract_output_lengths(lengths)[1]
        check_media_tokens(
            ids,
            clip_ids=clip_ids,
            video_token_id=thinker.config.video_token_id,
            video_features=video,
            audio_token_id=thinker.config.audio_token_id,
            audio_features=audio,
        )

    def loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, int]:
        self.check_media(batch)
        return super().loss(batch)

    def encode_prompt(self, batch: Mapping[str, Any]) -> EncodedPrompt:
        """Media features merged into the embeddings of a left-padded prompt batch (encoders run once)."""
        self.check_media(batch)
        thinker = self.base_model
        cfg = thinker.config
        ids = batch["input_ids"]
        mask = batch["attention_mask"]
        embeds = thinker.get_input_embeddings()(ids)  # [B, P, H]
        if batch.get("pixel_values_videos") is not None:
            video = thinker.get_video_features(batch["pixel_values_videos"], batch["video_grid_thw"]).pooler_output
            video = torch.cat(list(video), dim=0).to(embeds.dtype)  # [N_video_tokens, H]
            embeds = embeds.masked_scatter((ids == cfg.video_token_id).unsqueeze(-1), video)
        audio_lengths = None
        if batch.get("input_features") is not None:
            fmask = batch["feature_attention_mask"]
            audio = thinker.get_audio_features(batch["input_features"], fmask).last_hidden_state.to(embeds.dtype)
            embeds = embeds.masked_scatter((ids == cfg.audio_token_id).unsqueeze(-1), audio)
            audio_lengths = fmask.sum(-1)
        positions, _ = thinker.model.get_rope_index(
            ids,
            batch.get("image_grid_thw"),
            batch.get("video_grid_thw"),
            mask,
            False,
            audio_lengths,
            batch.get("video_second_per_grid"),
        )  # [3, B, P]
        positions = positions.to(ids.device)
        next_position = positions.masked_fill(~mask.bool()[None], -1).amax(dim=(0, 2)) + 1  # [B]
        gen_keys = ("video_grid_thw", "image_grid_thw", "feature_attention_mask", "video_second_per_grid")
        return EncodedPrompt(
            input_ids=ids,
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            next_position=next_position,
            generate_kwargs={k: batch[k] for k in gen_keys if batch.get(k) is not None},
        )

    def _hidden_states(
        self, embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> torch.Tensor:
        out = self.base_model.model(
            inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
        return out.last_hidden_state
