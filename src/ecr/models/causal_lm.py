"""Text-only backbone and its collator: any `AutoModelForCausalLM`, so the SFT/GRPO stages also run on text
emotion tasks.

Samples carry a `text` field (e.g. a subtitle or utterance) that precedes the same instruction; the target
format and the label masking are those of the Omni backbone. LoRA defaults to peft's "all-linear" (every
linear layer except the output head): a text LM has no towers to protect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ecr.errors import ConfigError
from ecr.models.backbone import CollateMode, EncodedPrompt
from ecr.models.collate import ChatCollator
from ecr.models.hf import HFBackbone
from ecr.models.registry import register_backbone
from ecr.prompts import build_text_messages, instruction_for


@dataclass
class TextCollator(ChatCollator):
    """Text samples (`text`, `label`, `explanation`, `id`) → causal-LM inputs with the same template rules."""

    text_field: str = "text"

    def _messages(self, sample: Mapping[str, Any], target: str | None) -> list[dict[str, Any]]:
        if self.text_field not in sample:
            raise ConfigError(f"{sample.get('id', '?')}: text sample has no {self.text_field!r} field")
        instruction = instruction_for(self.instruction, sample.get("label"))
        return build_text_messages(sample[self.text_field], instruction=instruction, target=target)

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not samples:
            raise ConfigError("collator received an empty batch")
        texts, suffixes = self._texts(self._messages, samples)
        batch = dict(self.tokenizer(texts, return_tensors="pt", add_special_tokens=False, **self._text_kwargs()))
        batch.pop("token_type_ids", None)
        return self._finish(batch, suffixes, samples)


@register_backbone("causal_lm")
class CausalLMBackbone(HFBackbone):
    """A decoder-only language model loaded with `AutoModelForCausalLM`."""

    name = "causal_lm"
    tower_prefixes: dict[str, str] = {}
    default_lora_targets = "all-linear"

    @property
    def model_class(self) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def load_processor(self, path: Path) -> Any:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok

    def collator(self, mode: CollateMode) -> TextCollator:
        end = self.tokenizer.eos_token if "<|im_end|>" not in self.tokenizer.get_vocab() else "<|im_end|>"
        return TextCollator(**self.chat_settings(mode), end_of_turn=end)

    def encode_prompt(self, batch: Mapping[str, Any]) -> EncodedPrompt:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        embeds = self.base_model.get_input_embeddings()(ids)  # [B, P, H]
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)  # [B, P], left padding aware
        return EncodedPrompt(
            input_ids=ids,
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions[None],
            next_position=positions[:, -1] + 1,
        )

    def _decoder(self) -> torch.nn.Module:
        return self.base_model.get_decoder()

    def _decoder_positions(self, position_ids: torch.Tensor) -> torch.Tensor:
        return position_ids[0]  # plain 1-D rotary positions
