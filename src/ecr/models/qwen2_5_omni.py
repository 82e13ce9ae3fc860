"""Qwen2.5-Omni: the thinker backbone (video + audio + text → text), its collator and its media-token check.

Everything this family knows lives here: how clips become processor inputs (`OmniCollator`), how many
placeholder tokens each medium needs (`check_omni_media`, run by the collator with the processor's geometry
and by the backbone with the model's), and how media become prompt embeddings (`encode_prompt`).

Only the thinker is loaded (`Qwen2_5OmniThinkerForConditionalGeneration`; the talker/token2wav weights of a
full Omni checkpoint are skipped by transformers). Towers: `model.visual` and `model.audio_tower`, frozen by
default and kept out of 8-bit quantisation; LoRA targets the language model's attention + MLP projections.

Two prompt layouts (`policy.inputs.audio_in_video`):
- audio-in-video (default, how Qwen2.5-Omni was trained on clips with sound): ONE video item whose soundtrack
  is interleaved with the frames in `seconds_per_chunk` chunks,
  `<|vision_bos|><|audio_bos|>` V…(chunk 0) A…(chunk 0) V…(chunk 1) A…(chunk 1) … `<|audio_eos|><|vision_eos|>`,
  with time-aligned rotary positions (TMRoPE: audio token k sits at temporal position k, 25 per second; video
  grid g at `g · video_second_per_grid · position_id_per_seconds`). transformers' processor builds it
  (`load_audio_from_video=True`, fed the decoder's own audio) and the thinker positions it
  (`use_audio_in_video=True`, carried in the batch as that forward kwarg).
- sequential (`false`): a video item then a separate audio item; audio positions continue after the video's.

Encode-once: `encode_prompt` runs the vision and audio encoders a single time, scatters their features into
the prompt embeddings and computes the 3-D m-RoPE positions; `generate` and `token_logprobs` then run on
those embeddings (completion tokens continue at `max(prompt position) + 1`, exactly what the model does when
it sees the full sequence — tested to give identical log-probs for both layouts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from ecr.data.decode import DURATION_TOLERANCE_S
from ecr.errors import ClipError, ConfigError, MediaTokenMismatchError
from ecr.models.backbone import CollateMode, EncodedPrompt
from ecr.models.collate import ChatCollator, check_media_tokens
from ecr.models.hf import HFBackbone, module_regex
from ecr.models.registry import register_backbone
from ecr.prompts import build_messages, instruction_for

if TYPE_CHECKING:
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

_LM_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


_WHISPER_MAX_SECONDS = 30  # Whisper-style extractors pad/cut every clip to their window (30 s by default)
# DURATION_TOLERANCE_S (the decoder's and `ecr data check`'s rule) is the largest gap between a clip's audio and
# its video window that may still be interleaved on one timeline; beyond it the clip is a ClipError, never padded.


def qwen_omni_audio_tokens(feature_lengths: torch.Tensor) -> torch.Tensor:
    """Audio features the Qwen2.5-Omni audio encoder emits for mel lengths (two stride-2 stages).

    feature_lengths [N] (mel frames, 100 per second) → [N] tokens (25 per second).
    """
    after_conv = (feature_lengths - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


def video_token_counts(video_grid_thw: torch.Tensor, merge_size: int) -> torch.Tensor:
    """Merged visual tokens per video: grid_t·grid_h·grid_w / merge². [N, 3] → [N]"""
    return video_grid_thw.prod(-1) // merge_size**2


def audio_in_video_rows(input_ids: torch.Tensor, vision_start_id: int, audio_start_id: int) -> torch.Tensor:
    """Rows holding an audio-in-video span (`<|vision_bos|><|audio_bos|>`, the marker `get_rope_index` keys on).

    input_ids [B, L] → [B] bool.
    """
    return ((input_ids[:, :-1] == vision_start_id) & (input_ids[:, 1:] == audio_start_id)).any(-1)


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
    """Clips → Qwen2.5-Omni processor inputs (frames + audio of the same window + instruction [+ target]).

    `audio_in_video` interleaves each clip's audio with its frames (module docstring); it needs both media.
    `position_id_per_seconds` / `seconds_per_chunk` must be the model config's (the backbone passes them), so
    that the processor's chunks are the ones the thinker's `get_rope_index` expects.
    """

    use_video: bool = True
    use_audio: bool = True
    min_pixels: int = 56 * 56
    max_pixels: int = 448 * 448
    audio_in_video: bool = True
    position_id_per_seconds: float = 25
    seconds_per_chunk: float = 2.0

    @property
    def interleaved(self) -> bool:
        """True when the batch uses the audio-in-video layout (asked for, and both media are fed)."""
        return self.audio_in_video and self.use_video and self.use_audio

    def _messages(self, sample: Mapping[str, Any], target: str | None) -> list[dict[str, Any]]:
        return build_messages(
            instruction=instruction_for(self.instruction, sample.get("label")),
            video=self.use_video,
            audio=self.use_audio and not self.interleaved,  # interleaved audio lives inside the video item
            target=target,
            system=self.system,
        )

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not samples:
            raise ConfigError("collator received an empty batch")
        texts, suffixes = self._texts(self._messages, samples)
        batch = self._interleaved(texts, samples) if self.interleaved else self._sequential(texts, samples)
        if self.use_video:
            batch["video_second_per_grid"] = torch.tensor([self._second_per_grid(s) for s in samples])
        batch["use_audio_in_video"] = self.interleaved  # the thinker's forward/generate kwarg of that name
        check_omni_media(
            batch,
            [s["id"] for s in samples],
            video_token_id=self.tokenizer.video_token_id,
            audio_token_id=self.tokenizer.audio_token_id,
            merge_size=self.processor.video_processor.merge_size,
            audio_tokens=qwen_omni_audio_tokens,
        )
        return self._finish(batch, suffixes, samples)

    def _videos_kwargs(self) -> dict[str, Any]:
        return {
            "size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
            "cap_pixels_per_frame": False,
        }

    def _second_per_grid(self, sample: Mapping[str, Any]) -> float:
        """Seconds per temporal patch from the clip's own frame spacing (frames at equal-segment midpoints of
        the decoded window, so window-relative: a clip cut from a longer video starts at time 0)."""
        tps = self.processor.video_processor.temporal_patch_size
        return tps * float(sample["duration"]) / max(1, int(sample["frames"].shape[0]))

    def _sequential(self, texts: list[str], samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """One batched processor call: a video placeholder block, then a separate audio block."""
        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "text_kwargs": self._text_kwargs()}
        if self.use_video:
            kwargs["videos"] = [s["frames"] for s in samples]
            kwargs["videos_kwargs"] = self._videos_kwargs()
        if self.use_audio:
            kwargs["audio"] = [self._audio(s) for s in samples]
        return dict(self.processor(**kwargs))

    def _interleaved(self, texts: list[str], samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The processor's audio-in-video path, one clip per call, then padded and concatenated.

        Per clip because the processor chunks frames by ONE `fps` per call, and clips of a batch may differ in
        duration; each clip's fps is its own frame spacing, the same one `video_second_per_grid` encodes.
        The audio is the decoder's (`audio_from_video_indices`), so the file is never decoded twice.
        """
        parts = []
        for text, sample in zip(texts, samples, strict=True):
            fps = self.processor.video_processor.temporal_patch_size / self._second_per_grid(sample)
            parts.append(
                self.processor(
                    text=[text],
                    videos=[sample["frames"]],
                    audio=[self._synced_audio(sample)],
                    audio_from_video_indices=[0],
                    load_audio_from_video=True,
                    position_id_per_seconds=self.position_id_per_seconds,
                    seconds_per_chunk=float(self.seconds_per_chunk),
                    videos_kwargs={**self._videos_kwargs(), "fps": fps},
                    return_tensors="pt",
                )
            )
        text_keys = ("input_ids", "attention_mask")
        padded = self.tokenizer.pad(
            {"input_ids": [p["input_ids"][0] for p in parts]},
            padding=True,
            padding_side=self._text_kwargs()["padding_side"],
            return_tensors="pt",
        )
        batch = {k: torch.cat([p[k] for p in parts]) for k in parts[0] if k not in text_keys}
        batch.update({k: padded[k] for k in text_keys})
        return batch

    def _synced_audio(self, sample: Mapping[str, Any]) -> np.ndarray:
        """The clip's audio, refused when it does not cover the video window (it could not be interleaved)."""
        audio = self._audio(sample)
        seconds = audio.shape[0] / int(sample["sample_rate"])
        if abs(seconds - float(sample["duration"])) > DURATION_TOLERANCE_S:
            raise ClipError(
                sample["id"], "duration_mismatch",
                f"audio lasts {seconds:.3f} s, the video window {float(sample['duration']):.3f} s "
                f"(tolerance {DURATION_TOLERANCE_S} s): they cannot share one timeline",
            )  # fmt: skip
        return audio

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
    # Qwen2_5OmniThinkerModel (towers under `model.`) ships from 5.21; with 5.21/5.22 the processor's audio
    # placeholders do not match the audio features ecr encodes (the lower-bound leg: docs/install.md)
    min_transformers = "5.23.0"
    default_lora_targets = module_regex("model.language_model.layers", _LM_PROJECTIONS)

    @property
    def model_class(self) -> Any:  # imported lazily: `--print_config` must not import the model zoo
        from transformers import Qwen2_5OmniThinkerForConditionalGeneration

        return Qwen2_5OmniThinkerForConditionalGeneration

    def load_processor(self, path: Path) -> Any:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, local_files_only=True)

    @property
    def thinker(self) -> Qwen2_5OmniThinkerForConditionalGeneration:
        """The loaded thinker, typed (`model_class` loads it; the generic base types it `PreTrainedModel`)."""
        return cast("Qwen2_5OmniThinkerForConditionalGeneration", self.base_model)

    def thinker_config(self) -> Any:
        """The thinker's config: the loaded model's, else read from the folder (no weights; full Omni
        checkpoints nest it as `thinker_config`)."""
        if self.model is not None:
            return self.base_model.config
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.path, local_files_only=True)
        return getattr(config, "thinker_config", config)

    def collator(self, mode: CollateMode) -> OmniCollator:
        inp = self.config.inputs
        cfg = self.thinker_config()
        return OmniCollator(
            **self.chat_settings(mode),
            use_video=inp.use_video,
            use_audio=inp.use_audio,
            min_pixels=inp.min_pixels,
            max_pixels=inp.max_pixels,
            audio_in_video=inp.audio_in_video,
            position_id_per_seconds=cfg.position_id_per_seconds,
            seconds_per_chunk=cfg.seconds_per_chunk,
        )

    def check_media(self, batch: Mapping[str, Any]) -> None:
        """Placeholders vs features with the MODEL's geometry (the thinker checks video only, audio never),
        and the layout vs the `use_audio_in_video` flag (a mismatch would mis-position every media token)."""
        thinker = self.thinker
        ids = batch["input_ids"]
        clip_ids = batch.get("meta", {}).get("ids") or [f"sample {i}" for i in range(ids.shape[0])]
        if batch.get("video_grid_thw") is not None:
            rows = audio_in_video_rows(ids, thinker.config.vision_start_token_id, thinker.config.audio_start_token_id)
            flag = bool(batch.get("use_audio_in_video", False))
            bad = (rows != flag).nonzero().flatten().tolist()
            if bad:
                raise MediaTokenMismatchError(
                    f"use_audio_in_video={flag} but the prompt layout of {', '.join(clip_ids[i] for i in bad)} "
                    "is the other one (audio interleaved in the video span or not)"
                )
        check_omni_media(
            batch,
            clip_ids,
            video_token_id=thinker.config.video_token_id,
            audio_token_id=thinker.config.audio_token_id,
            merge_size=thinker.spatial_merge_size,
            audio_tokens=lambda lengths: thinker.model.audio_tower._get_feat_extract_output_lengths(lengths)[1],
        )

    def loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, int]:
        self.check_media(batch)
        return super().loss(batch)

    def encode_prompt(self, batch: Mapping[str, Any]) -> EncodedPrompt:
        """Media features merged into the embeddings of a left-padded prompt batch (encoders run once)."""
        self.check_media(batch)
        thinker = self.thinker
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
            bool(batch.get("use_audio_in_video", False)),
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
            use_audio_in_video=bool(batch.get("use_audio_in_video", False)),
        )

    def generate(self, prompt: EncodedPrompt, **generation_kwargs: Any) -> torch.Tensor:
        """`HFBackbone.generate` told the prompt's layout: the thinker recomputes the prompt positions at prefill
        and must interleave them exactly as `encode_prompt` did (the flag the encoding was made with)."""
        generation_kwargs.setdefault("use_audio_in_video", prompt.use_audio_in_video)
        return super().generate(prompt, **generation_kwargs)

    def _decoder(self) -> torch.nn.Module:
        return self.thinker.model  # the thinker's language model (3-D m-RoPE positions)

    def _decoder_positions(self, position_ids: torch.Tensor) -> torch.Tensor:
        return position_ids
