"""The chat collator every backbone family builds on: samples → model inputs with the one template of
`ecr.prompts`, plus the generic media-placeholder check. Family collators (`OmniCollator` in
`ecr.models.qwen2_5_omni`, `TextCollator` in `ecr.models.causal_lm`) live beside their backbone.

Two modes share one code path:
- "train": prompt + assistant target (`<think>…</think>\\n<answer>…</answer>` then the end-of-turn token),
  right padding, `labels` = the assistant tokens only (-100 on the prompt, the media placeholders, padding and
  anything after the end-of-turn token);
- "generate": the prompt only, ending with the assistant header, left padding (for batched generation).

A family collator checks every batch with `check_media_tokens`, so that each sample has exactly as many media
placeholder tokens as its encoder will produce features; the backbone repeats the check with the MODEL's
geometry before each forward. The model would
otherwise scatter audio features into the wrong positions without a word — a known silent failure in other
trainers (e.g. after truncation). Sequences are never truncated: too long raises.

Collators are plain picklable objects (a processor + settings): DataLoader workers receive copies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ecr.errors import ConfigError, MediaTokenMismatchError
from ecr.models.backbone import CollateMode
from ecr.prompts import format_target

IGNORE_INDEX = -100
# A family's chat messages of one sample: (sample, assistant target or None for the prompt only) -> messages.
MessagesFn = Callable[[Mapping[str, Any], str | None], Sequence[Mapping[str, Any]]]


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
    video and one audio per sample), computed by the family from its processor's or model's geometry.
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
class ChatCollator:
    """Shared logic of the family collators: render messages, split prompt/target, label the assistant turn."""

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

    def _texts(
        self, messages_fn: MessagesFn, samples: Sequence[Mapping[str, Any]]
    ) -> tuple[list[str], list[list[int]]]:
        """Full texts to tokenise and, in train mode, the token ids of each assistant turn."""
        texts: list[str] = []
        suffixes: list[list[int]] = []
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

    def _finish(
        self, batch: dict[str, Any], suffixes: list[list[int]], samples: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
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


__all__ = ["IGNORE_INDEX", "ChatCollator", "assistant_labels", "check_media_tokens"]
