"""Collators: `list[ClipSample]` → model inputs, with the one chat template of `ecr.prompts`.

Two modes share one code path:
- "train": prompt + assistant target (`<think>…</think>\\n<answer>…</answer>` then the end-of-turn token),
  right padding, `labels` = the assistant tokens only (-100 on the prompt, the media placeholders, padding and
  anything after the end-of-turn token);
- "generate": the prompt only, ending with the assistant header, left padding (for batched generation).

Every batch is checked so that each sample has exactly as many media placeholder tokens as its encoder will
produce features (video: grid_t·grid_h·grid_w / merge²; audio: the Whisper-style conv formula over the
feature mask); the backbone repeats the check with the MODEL's geometry before each forward. The model would
otherwise scatter audio features into the wrong positions without a word — a known silent failure in other
trainers (e.g. after truncation). Sequences are never truncated: too long raises.

Collators are plain picklable objects (a processor + settings): DataLoader workers receive copies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ecr.errors import ClipError, ConfigError, MediaTokenMismatchError
from ecr.prompts import build_messages, build_text_messages, format_target

IGNORE_INDEX = -100
CollateMode = Literal["train", "generate"]
_WHISPER_MAX_SECONDS = 30  # Whisper-style extractors pad/cut every clip to their window (30 s by default)


def qwen_omni_audio_tokens(feature_lengths: torch.Tensor) -> torch.Tensor:
    """Audio features the Qwen2.5-Omni audio encoder emits for mel lengths (two stride-2 stages).

    feature_lengths [N] (mel frames, 100 per second) → [N] tokens (25 per second).
    """
    after_conv = (feature_lengths - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


def check_media_tokens(
    input_ids: torch.Tensor,
    *,
    clip_ids: Sequence[str],
    video_token_id: int | None = None,
    video_features: torch.Tensor | None = None,
    audio_token_id: int | None = None,
    audio_features: torch.Tensor | None = None,
) -> None:
    """Raise MediaTokenMismatchError if a sample's placeholder count differs from its encoder feature count.

    input_ids [B, L]; video_features / audio_features [B]: features the encoders produce per sample (one
    video and one audio per sample), e.g. `video_token_counts(grid, merge)` and `qwen_omni_audio_tokens(...)`.
    """
    for kind, token_id, expected in (
        ("video", video_token_id, video_features),
        ("audio", audio_token_id, audio_features),
    ):
        if token_id is None or expected is None:
            continue
        found = (input_ids == token_id).sum(-1)  # [B]
        if expected.shape[0] != input_ids.shape[0]:
            raise MediaTokenMismatchError(
                f"{kind}: {expected.shape[0]} media items for {input_ids.shape[0]} samples (one per sample expected)"
            )
        bad = (found != expected.to(found.device)).nonzero().flatten().tolist()
        if bad:
            details = ", ".join(f"{clip_ids[i]}: {int(found[i])} tokens vs {int(expected[i])} features" for i in bad)
            raise MediaTokenMismatchError(
                f"{kind} placeholder tokens do not match encoder features ({details}); the sequence was cut "
                "or the processor and the model disagree on the media geometry"
            )


def video_token_counts(video_grid_thw: torch.Tensor, merge_size: int) -> torch.Tensor:
    """Merged visual tokens per video: grid_t·grid_h·grid_w / merge². [N, 3] → [N]"""
    return video_grid_thw.prod(-1) // merge_size**2


def assistant_labels(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    suffixes: Sequence[Sequence[int]],
    end_token_id: int,
    clip_ids: Sequence[str],
) -> torch.Tensor:
    """Labels for right-padded rows whose last real tokens are `suffixes[i]` (the assistant turn).

    Everything else becomes IGNORE_INDEX, as do suffix tokens after the first `end_token_id` (the template's
    trailing newline). input_ids, attention_mask [B, L] → labels [B, L].
    """
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    lengths = attention_mask.sum(-1).tolist()
    for i, suffix in enumerate(suffixes):
        end = int(lengths[i])
        start = end - len(suffix)
        row = input_ids[i, start:end].tolist()
        if start < 0 or row != list(suffix):
            raise ConfigError(
                f"{clip_ids[i]}: the tokenised conversation does not end with the tokenised assistant turn; the "
                "chat template or tokenizer is not prefix-stable (or the sequence was truncated)"
            )
        keep = len(suffix)
        if end_token_id in suffix:
            keep = list(suffix).index(end_token_id) + 1
        labels[i, start : start + keep] = input_ids[i, start : start + keep]
    return labels


@dataclass
class _ChatCollator:
    """Shared logic: render messages, split prompt/target, label the assistant turn."""

    processor: Any
    mode: CollateMode = "train"
    instruction: str = ""
    system: str | None = None
    max_length: int | None = None
    end_of_turn: str = "<|im_end|>"

    def __post_init__(self) -> None:
        if self.mode not in ("train", "generate"):
            raise ConfigError(f"collator mode must be 'train' or 'generate', got {self.mode!r}")

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    def _texts(self, messages_fn, samples: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[int]]]:
        """Full texts to tokenise and, in train mode, the token ids of each assistant turn."""
        texts, suffixes = [], []
        for s in samples:
            prompt = self.processor.apply_chat_template(
                messages_fn(s, None), add_generation_prompt=True, tokenize=False
            )
            if self.mode == "generate":
                texts.append(prompt)
                continue
            if not s.get("explanation"):
                raise ConfigError(f"{s['id']}: SFT needs an explanation (field 'explanation' is empty)")
            target = format_target(s["explanation"], s["label"])
            full = self.processor.apply_chat_template(messages_fn(s, target), tokenize=False)
            if not full.startswith(prompt):
                raise ConfigError("chat template: the conversation with the answer does not start with the prompt")
            texts.append(full)
            suffixes.append(self.tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"])
        return texts, suffixes

    def _text_kwargs(self) -> dict[str, Any]:
        """Tokenizer options (a processor receives them as `text_kwargs`, so audio/video ignore them)."""
        return {"padding": True, "padding_side": "right" if self.mode == "train" else "left"}

    def _finish(self, batch: dict[str, Any], suffixes: list[list[int]], samples: Sequence[Mapping[str, Any]]):
        ids = [s["id"] for s in samples]
        length = batch["input_ids"].shape[1]
        if self.max_length and length > self.max_length:
            longest = ids[int(batch["attention_mask"].sum(-1).argmax())]
            raise ConfigError(
                f"{longest}: {length} tokens exceed inputs.max_length={self.max_length} "
                "(never truncated: a cut would drop target or media tokens; raise it or lower max_pixels/frames)"
            )
        if self.mode == "train":
            end_id = self.tokenizer.convert_tokens_to_ids(self.end_of_turn)
            batch["labels"] = assistant_labels(batch["input_ids"], batch["attention_mask"], suffixes, end_id, ids)
        batch["meta"] = {
            "ids": ids,
            "label": [s["label"] for s in samples],
            "label_id": torch.tensor([int(s.get("label_id", -1)) for s in samples]),
        }
        return batch


@dataclass
class OmniCollator(_ChatCollator):
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
        merge = self.processor.video_processor.merge_size
        check_media_tokens(
            batch["input_ids"],
            clip_ids=[s["id"] for s in samples],
            video_token_id=self.tokenizer.video_token_id if self.use_video else None,
            video_features=video_token_counts(batch["video_grid_thw"], merge) if self.use_video else None,
            audio_token_id=self.tokenizer.audio_token_id if self.use_audio else None,
            audio_features=qwen_omni_audio_tokens(batch["feature_attention_mask"].sum(-1)) if self.use_audio else None,
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


@dataclass
class TextCollator(_ChatCollator):
    """Text samples (`text`, `label`, `explanation`, `id`) → causal-LM inputs with the same template rules."""

    text_field: str = "text"

    def _messages(self, sample: Mapping[str, Any], target: str | None):
        if self.text_field not in sample:
            raise ConfigError(f"{sample.get('id', '?')}: text sample has no {self.text_field!r} field")
        return build_text_messages(sample[self.text_field], instruction=self.instruction, target=target)

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not samples:
            raise ConfigError("collator received an empty batch")
        texts, suffixes = self._texts(self._messages, samples)
        batch = dict(self.tokenizer(texts, return_tensors="pt", add_special_tokens=False, **self._text_kwargs()))
        batch.pop("token_type_ids", None)
        return self._finish(batch, suffixes, samples)


__all__ = [
    "IGNORE_INDEX",
    "OmniCollator",
    "TextCollator",
    "assistant_labels",
    "check_media_tokens",
    "video_token_counts",
    "qwen_omni_audio_tokens",
]
