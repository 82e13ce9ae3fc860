"""Qwen2.5-Omni: the thinker backbone (video + audio + text → text), its collator and its media-token check.

Everything this family knows lives here: how clips become processor inputs (`OmniCollator`), how many
placeholder tokens each medium needs (`check_omni_media`, run by the collator with the processor's geometry
and by the backbone with the model's), and how media become prompt embeddings (`encode_prompt`).

Only the thinker is loaded (`Qwen2_5OmniThinkerForConditionalGeneration`; the talker/token2wav weights of a
full Omni checkpoint are skipped by transformers). Towers: `model.visual` and `model.audio_tower`, frozen by
default and kept out of 8-bit quantisation; LoRA targets the language model's attention + MLP projections.

Encode-once: `encode_prompt` runs the vision and audio encoders a single time, scatters their features into
the prompt embeddings and computes the 3-D m-RoPE positions; `generate` and `token_logprobs` then run on
those embeddings (completion tokens continue at `max(prompt position) + 1`, exactly what the model does when
it sees the full sequence — tested to give identical log-probs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecr.errors import ClipError, ConfigError
from ecr.models.backbone import CollateMode, EncodedPrompt
from ecr.models.collate import ChatCollator, check_media_tokens
from ecr.models.hf import HFBackbone, module_regex
from ecr.models.registry import register_backbone
from ecr.prompts import build_messages

_LM_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


_WHISPER_MAX_SECONDS = 30  # Whisper-style extractors pad/cut every clip to their window (30 s by default)


def qwen_omni_audio_tokens(feature_lengths: torch.Tensor) -> torch.Tensor:
    """Audio features the Qwen2.5-Omni audio encoder emits for mel lengths (two stride-2 stages).

    feature_lengths [N] (mel frames, 100 per second) → [N] tokens (25 per second).
    """
    after_conv = (feature_lengths - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


def video_token_counts(video_grid_thw: torch.Tensor, merge_size: int) -> torch.Tensor:
    """Merged visual tokens per video: grid_t·grid_h·grid_w / merge². [N, 3] → [N]"""
    return video_grid_thw.prod(-1) // merge_size**2


def check_omni_media(
    batch: Mapping[str, Any],
    clip_ids: Sequence[str],
    *,
    video_token_id: int,
    audio_token_id: int,
    merge_size: int,
    audio_tokens: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    """The one Omni media-token check: placeholders vs the features the encoders will emit per sample.

    Called by the collator with the processor's geometry and by the backbone with the model's, so a processor
    and a model that disagree are caught before a forward. `audio_tokens` maps mel lengths [B] to tokens [B].
    Media absent from the batch (no `video_grid_thw` / `feature_attention_mask`) are not checked.
    """
    grid, fmask = batch.get("video_grid_thw"), batch.get("feature_attention_mask")
    check_media_tokens(
        batch["input_ids"],
        clip_ids=clip_ids,
        video_token_id=video_token_id if grid is not None else None,
        video_features=video_token_counts(grid, merge_size) if grid is not None else None,
        audio_token_id=audio_token_id if fmask is not None else None,
        audio_features=audio_tokens(fmask.sum(-1)) if fmask is not None else None,
    )


@dataclass
class OmniCollator(ChatCollator):
    """Clips → Qwen2.5-Omni processor inputs (frames + audio of the same window + instruction [+ target])."""

    use_video: bool = True
    use_audio: bool = True
    min_pixels: int = 56 * 56
    max_pixels: int = 448 * 448

    def _messages(self, sample: Mapping[str, Any], target: str | None):
        return build_messages(
            instruction=self.instruction,
            video=self.use_video,
            audio=self.use_audio,
            target=target,
            system=self.system,
        )

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not samples:
            raise ConfigError("collator received an empty batch")
        texts, suffixes = self._texts(self._messages, samples)
        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "text_kwargs": self._text_kwargs()}
        if self.use_video:
            kwargs["videos"] = [s["frames"] for s in samples]
            kwargs["videos_kwargs"] = {
                "size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
                "cap_pixels_per_frame": False,
            }
        if self.use_audio:
            kwargs["audio"] = [self._audio(s) for s in samples]
        batch = dict(self.processor(**kwargs))
        if self.use_video:
            # Seconds per temporal patch from each clip's own frame spacing (the processor assumes one fps).
            tps = self.processor.video_processor.temporal_patch_size
            batch["video_second_per_grid"] = torch.tensor(
                [tps * float(s["duration"]) / max(1, int(s["frames"].shape[0])) for s in samples]
            )
        check_omni_media(
            batch,
            [s["id"] for s in samples],
            video_token_id=self.tokenizer.video_token_id,
            audio_token_id=self.tokenizer.audio_token_id,
            merge_size=self.processor.video_processor.merge_size,
            audio_tokens=qwen_omni_audio_tokens,
        )
        return self._finish(batch, suffixes, samples)

    def _audio(self, sample: Mapping[str, Any]) -> np.ndarray:
        rate = self.processor.feature_extractor.sampling_rate
        audio = sample["audio"]
        if int(sample["sample_rate"]) != rate:
            raise ClipError(
                sample["id"],
                "sample_rate",
                f"audio at {sample['sample_rate']} Hz, the model expects {rate} Hz",
            )
        if audio.ndim != 1 or audio.numel() == 0:
            raise ClipError(
                sample["id"],
                "empty",
                f"audio must be a non-empty mono waveform, got shape {tuple(audio.shape)}",
            )
        limit = int(getattr(self.processor.feature_extractor, "n_samples", _WHISPER_MAX_SECONDS * rate))
        if audio.numel() > limit:
            raise ClipError(
                sample["id"], "window",
                f"{audio.numel() / rate:.1f} s of audio; the feature extractor takes at most {limit / rate:.0f} s "
                "(it would cut the rest silently)",
            )  # fmt: skip
        return audio.to(torch.float32).numpy()


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
            **self.chat_settings(mode),
            use_video=inp.use_video,
            use_audio=inp.use_audio,
            min_pixels=inp.min_pixels,
            max_pixels=inp.max_pixels,
        )

    def check_media(self, batch: Mapping[str, Any]) -> None:
        """Placeholders vs features with the MODEL's geometry (the thinker checks video only, audio never)."""
        thinker = self.base_model
        ids = batch["input_ids"]
        check_omni_media(
            batch,
            batch.get("meta", {}).get("ids") or [f"sample {i}" for i in range(ids.shape[0])],
            video_token_id=thinker.config.video_token_id,
            audio_token_id=thinker.config.audio_token_id,
            merge_size=thinker.config.vision_config.spatial_merge_size,
            audio_tokens=lambda lengths: thinker.model.audio_tower._get_feat_extract_output_lengths(lengths)[1],
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
