"""The HumanOmni model (R1-Omni / ERV / HumanOmni checkpoints), re-implemented from the reference spec.

Qwen2 language model + SigLIP vision tower (penultimate hidden states of every frame) + Whisper encoder (1500
states average-pooled ×3 to 500 tokens) + `AllInOne(Small)` projector + a BERT [CLS] router whose 3-way gate
mixes the video, body and face branches + an MLP audio projector. Module names are the released state-dict keys
(`model.mm_projector.*`, `model.bert_gate.{0,2}.*`, `model.vision_tower.vision_tower.vision_model.*`,
`model.audio_tower.audio_tower.*`, …), so `from_pretrained` of a released folder fills every tensor.

Prompts hold ONE placeholder id per medium (`VIDEO_TOKEN_INDEX` −201, `AUDIO_TOKEN_INDEX` −202, as the
official tokeniser emits them); `splice_media` replaces each by its whole feature block. Unlike the official
code it works with left padding (batched generation), never reuses the video block for a missing audio, and
refuses media without a placeholder. Positions are plain 1-D (0..L−1 over the real tokens).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2ForCausalLM, Qwen2Model
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.qwen2.modeling_qwen2 import Qwen2PreTrainedModel

from ecr.errors import ConfigError, MediaTokenMismatchError
from ecr.models.collate import IGNORE_INDEX
from ecr.models.humanomni.config import HumanOmniQwen2Config
from ecr.models.humanomni.projector import (
    build_audio_projector,
    build_vision_projector,
    face_pool,
    route_mix,
    slow_fast_compress,
)

if TYPE_CHECKING:
    from transformers import SiglipVisionModel

IMAGE_TOKEN_INDEX = -200
VIDEO_TOKEN_INDEX = -201
AUDIO_TOKEN_INDEX = -202
AUDIO_POOL = 3  # Whisper states averaged per audio token (1500 → 500)


def _required(config: HumanOmniQwen2Config, key: str) -> dict[str, Any]:
    value = getattr(config, key)
    if value is None:
        raise ConfigError(
            f"humanomni config: {key} is not set; load the folder with ecr.models.humanomni.load_pretrained (it "
            "reads the tower folders' config.json) or embed the tower config"
        )
    return {k: v for k, v in value.items() if k != "model_type"}


class VisionTower(nn.Module):
    """`model.vision_tower`: SigLIP under `.vision_tower`, read at `mm_vision_select_layer` (no post-LN, no head)."""

    def __init__(self, config: HumanOmniQwen2Config) -> None:
        super().__init__()
        from transformers import SiglipVisionConfig, SiglipVisionModel

        if config.mm_vision_select_feature != "patch":
            raise ConfigError(f"config.json: mm_vision_select_feature {config.mm_vision_select_feature!r} != 'patch'")
        self.select_layer = config.mm_vision_select_layer
        self.vision_tower = SiglipTower(SiglipVisionModel(SiglipVisionConfig(**_required(config, "vision_config"))))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels [N, 3, S, S] → patch features [N, s², C] of hidden state `select_layer` (−2: after layer L−1,
        so the last layer, post-LN and head never run). Always without gradients (as the official tower)."""
        siglip = self.vision_tower.vision_model
        layers = siglip.encoder.layers
        keep = self.select_layer % (len(layers) + 1)  # hidden_states[k] = output of the first k layers
        with torch.no_grad():
            hidden = siglip.embeddings(pixels.to(next(siglip.parameters()).dtype))  # [N, s², C]
            for layer in layers[:keep]:
                hidden = layer(hidden, None)
        return hidden


class SiglipTower(nn.Module):
    """Holds SigLIP under `vision_model`, the attribute path of the released keys
    (`model.vision_tower.vision_tower.vision_model.*`; transformers 5 flattened `SiglipVisionModel` itself)."""

    def __init__(self, vision_model: SiglipVisionModel) -> None:
        super().__init__()
        self.vision_model = vision_model


class AudioTower(nn.Module):
    """`model.audio_tower`: Whisper (audio-classification class, as stored) whose encoder output is pooled ×3."""

    def __init__(self, config: HumanOmniQwen2Config) -> None:
        super().__init__()
        from transformers import WhisperConfig, WhisperForAudioClassification

        self.audio_tower = WhisperForAudioClassification(WhisperConfig(**_required(config, "audio_config")))

    @property
    def input_frames(self) -> int:
        """Mel frames the encoder requires (3000 for Whisper-large-v3: two stride-1/2 convs over 1500 positions)."""
        return 2 * self.audio_tower.config.max_source_positions

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """log-mel features [B, M, 2·P] → pooled states [B, P/3, D]."""
        dtype = next(self.audio_tower.parameters()).dtype
        states = self.audio_tower.encoder(features.to(dtype)).last_hidden_state  # [B, P, D]
        return F.avg_pool1d(states.transpose(1, 2), AUDIO_POOL, AUDIO_POOL).transpose(1, 2)  # [B, P/3, D]


class HumanOmniQwen2Model(Qwen2Model):
    """Qwen2Model + the multimodal modules, attached in the official order."""

    config_class = HumanOmniQwen2Config

    def __init__(self, config: HumanOmniQwen2Config) -> None:
        super().__init__(config)
        from transformers import BertConfig, BertModel

        self.vision_tower = VisionTower(config)
        self.mm_projector = build_vision_projector(config.mm_projector_type, config.mm_hidden_size, config.hidden_size)
        router = BertConfig(**_required(config, "router_config"))
        self.bert_model = BertModel(router)
        self.bert_gate = nn.Sequential(
            nn.Linear(router.hidden_size, config.router_gate_size), nn.GELU(), nn.Linear(config.router_gate_size, 3)
        )
        self.bert_softmax = nn.Softmax(dim=1)
        self.audio_tower = AudioTower(config)
        audio_width = self.audio_tower.audio_tower.config.d_model
        self.audio_projector = build_audio_projector(config.mm_audio_projector_type, audio_width, config.hidden_size)

    def router_probs(self, prompts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Branch weights (video, body, face) from BERT's [CLS] state (not the pooler). → [B, 3]"""
        cls = self.bert_model(**prompts).last_hidden_state[:, 0]  # [B, 768]
        return self.bert_softmax(self.bert_gate(cls))

    def encode_videos(self, images: torch.Tensor, prompts: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        """images [B, T, 3, S, S] + router inputs → routed visual tokens [B, T·s'², H]."""
        if prompts is None:
            raise MediaTokenMismatchError("video given without router inputs (`prompts`, the BERT-tokenised text)")
        b, t = images.shape[:2]
        feats = self.vision_tower(images.flatten(0, 1))  # [B·T, N, C]
        feats = feats.to(next(self.mm_projector.parameters()).dtype)
        per_video = feats.reshape(b, t, *feats.shape[1:])  # [B, T, N, C]
        video, body, face = self.mm_projector(per_video, per_video, feats)  # [B, K, H], [B, K, H], [B·T, N, H]
        face = face_pool(face).reshape(b, -1, face.shape[-1])  # [B, T·⌈s/2⌉², H]
        if face.shape != video.shape:
            raise ConfigError(f"face tokens {tuple(face.shape)} do not match video tokens {tuple(video.shape)}")
        mixed = route_mix(self.router_probs(prompts), video, body, face)  # [B, T·s'², H]
        if self.config.slow_fast_compressor:
            return slow_fast_compress(mixed, t)
        return mixed

    def encode_audios(self, audios: torch.Tensor) -> torch.Tensor:
        """audios [B, M, 3000] (or [B, 1, M, 3000]) → audio tokens [B, 500, H]."""
        if audios.dim() == 4:
            audios = audios.flatten(0, 1)
        if audios.shape[-1] != self.audio_tower.input_frames:
            raise MediaTokenMismatchError(
                f"audio features have {audios.shape[-1]} frames; the Whisper encoder needs exactly "
                f"{self.audio_tower.input_frames} (pad to the feature extractor's full window)"
            )
        states = self.audio_tower(audios)
        return self.audio_projector(states.to(next(self.audio_projector.parameters()).dtype))


@dataclass
class Spliced:
    """A prompt batch with each media placeholder expanded to its feature block."""

    input_ids: torch.Tensor  # [B, L'] ids; media positions hold their (negative) placeholder id
    inputs_embeds: torch.Tensor  # [B, L', H]
    attention_mask: torch.Tensor  # [B, L']
    labels: torch.Tensor | None  # [B, L'] (-100 on media) when labels were given
    position_ids: torch.Tensor  # [B, L'] 0.. over the real tokens (left padding aware)


def placeholder_count(input_ids: torch.Tensor, token: int, what: str) -> int:
    """The number of `token` placeholders per row, the same in every row (0 or 1). input_ids [B, L]."""
    counts = (input_ids == token).sum(-1)
    if not bool((counts == counts[0]).all()) or int(counts[0]) > 1:
        raise MediaTokenMismatchError(
            f"<{what}> placeholders per row are {counts.tolist()}; each row needs the same single placeholder"
        )
    return int(counts[0])


def expand_rows(values: torch.Tensor, input_ids: torch.Tensor, sizes: dict[int, int]) -> torch.Tensor:
    """Repeat each placeholder position of every row `sizes[id]` times. values, input_ids [B, L] → [B, L']."""
    repeats = torch.ones_like(input_ids)
    for token, size in sizes.items():
        repeats = torch.where(input_ids == token, torch.full_like(repeats, size), repeats)
    return torch.stack([v.repeat_interleave(r) for v, r in zip(values, repeats, strict=True)])


def splice_media(
    embed: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    video: torch.Tensor | None,
    audio: torch.Tensor | None,
    labels: torch.Tensor | None = None,
) -> Spliced:
    """Replace `<video>`/`<audio>` placeholders by their feature blocks (row b gets video[b], audio[b]).

    input_ids, attention_mask [B, L]; video [B, Kv, H] | None; audio [B, Ka, H] | None → `Spliced` [B, L'].
    """
    n_video = placeholder_count(input_ids, VIDEO_TOKEN_INDEX, "video")
    n_audio = placeholder_count(input_ids, AUDIO_TOKEN_INDEX, "audio")
    if bool((input_ids == IMAGE_TOKEN_INDEX).any()):
        raise MediaTokenMismatchError("<image> placeholders are not supported (HumanOmni clips are videos)")
    for what, n, feats in (("video", n_video, video), ("audio", n_audio, audio)):
        if n and feats is None:
            raise MediaTokenMismatchError(f"the prompt has an <{what}> placeholder but no {what} tensor was given")
        if not n and feats is not None:
            raise MediaTokenMismatchError(f"a {what} tensor was given but the prompt has no <{what}> placeholder")
    sizes = {  # a tensor is given exactly when its placeholder is there (checked above)
        VIDEO_TOKEN_INDEX: video.shape[1] if video is not None else 1,
        AUDIO_TOKEN_INDEX: audio.shape[1] if audio is not None else 1,
    }
    ids = expand_rows(input_ids, input_ids, sizes)  # [B, L']
    mask = expand_rows(attention_mask, input_ids, sizes)
    embeds = embed(ids.clamp(min=0))  # [B, L', H]; media rows are overwritten below
    for token, feats in ((VIDEO_TOKEN_INDEX, video), (AUDIO_TOKEN_INDEX, audio)):
        if feats is not None:
            where = (ids == token).unsqueeze(-1)  # [B, L', 1]
            embeds = embeds.masked_scatter(where, feats.to(embeds.dtype).reshape(-1, embeds.shape[-1]))
    new_labels = None
    if labels is not None:
        new_labels = expand_rows(labels, input_ids, sizes).masked_fill(ids < 0, IGNORE_INDEX)
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    return Spliced(ids, embeds, mask, new_labels, positions)


class HumanOmniQwen2ForCausalLM(Qwen2ForCausalLM):
    """`HumanOmniQwen2ForCausalLM` of the released folders: `model` (LM + media modules) and `lm_head`."""

    config_class = HumanOmniQwen2Config
    config: HumanOmniQwen2Config

    def __init__(self, config: HumanOmniQwen2Config) -> None:
        Qwen2PreTrainedModel.__init__(self, config)  # not Qwen2ForCausalLM.__init__: no throw-away Qwen2Model
        self.model = HumanOmniQwen2Model(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def splice(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        images: torch.Tensor | None = None,
        audios: torch.Tensor | None = None,
        prompts: Mapping[str, torch.Tensor] | None = None,
        labels: torch.Tensor | None = None,
    ) -> Spliced:
        """Run the towers, router and projectors once and splice their tokens into the prompt embeddings."""
        video = self.model.encode_videos(images, prompts) if images is not None else None
        audio = self.model.encode_audios(audios) if audios is not None else None
        return splice_media(self.get_input_embeddings(), input_ids, attention_mask, video, audio, labels)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        images: torch.Tensor | None = None,
        audios: torch.Tensor | None = None,
        prompts: Mapping[str, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Qwen2's forward, after splicing media when `input_ids` carry placeholders (or media are given)."""
        has_media = images is not None or audios is not None
        if inputs_embeds is None and input_ids is not None and (has_media or bool((input_ids < 0).any())):
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            spliced = self.splice(input_ids, attention_mask, images, audios, prompts, labels)
            input_ids, inputs_embeds, attention_mask = None, spliced.inputs_embeds, spliced.attention_mask
            # transformers annotates ids as LongTensor, a class no tensor operation is typed to return
            labels = cast("torch.LongTensor | None", spliced.labels)
            position_ids = cast("torch.LongTensor", spliced.position_ids) if position_ids is None else position_ids
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
