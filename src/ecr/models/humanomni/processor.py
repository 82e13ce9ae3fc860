"""HumanOmni inputs: the official prompt, placeholder tokenisation, frame/audio preprocessing and the collator.

- Prompt (docs/humanomni.md): the user turn `<video>\\n<audio>\\n{instruction}` with `mm_use_x_start_end` tags
  (`<vi_start><video><vi_end>\\n<au_start><audio><au_end>\\n…`) through the checkpoint's own chat template;
  the tags are plain text. The text chunks around `<video>`/`<audio>` are tokenised SEPARATELY (official BPE
  boundaries) and joined by one placeholder id each (−201, −202), which the model expands.
- Frames: `num_frames` indices by the official uniform rule, optional square padding with the SigLIP mean
  (training-time behaviour; off by default as at official inference), SigLIP resize (bicubic, to the tower's
  square `image_size`, no crop), rescale and normalise to [−1, 1].
- Audio: mono 16 kHz → Whisper log-mel padded to exactly the encoder window (3000 frames for 30 s); longer
  audio, another rate or non-finite samples are a `ClipError` (the official code cuts or zero-fills silently).
- Router: the raw instruction, BERT-tokenised (truncated to 512), as the `prompts` dict.
Batches are right-padded for training, left-padded for generation.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ecr.errors import ClipError, ConfigError
from ecr.models.collate import ChatCollator
from ecr.models.humanomni.config import HumanOmniQwen2Config, register, tower_folder
from ecr.models.humanomni.model import AUDIO_TOKEN_INDEX, IMAGE_TOKEN_INDEX, VIDEO_TOKEN_INDEX

PLACEHOLDERS = {"<video>": VIDEO_TOKEN_INDEX, "<audio>": AUDIO_TOKEN_INDEX, "<image>": IMAGE_TOKEN_INDEX}
WRAPPED = {"<video>": "<vi_start><video><vi_end>", "<audio>": "<au_start><audio><au_end>"}
ROUTER_MAX_TOKENS = 512


def uniform_frame_indices(num_available: int, num_frames: int) -> list[int]:
    """The official uniform sampling: idx_i = round((N − 1)/T · (i + ½) + 1e-6) (ties upwards); always T indices
    (duplicates for short clips). N = T gives 0..T−1."""
    if num_available < 1:
        raise ValueError("no frames to sample from")
    seg = (num_available - 1) / num_frames
    return [int(torch.tensor(seg * (i + 0.5) + 1e-6, dtype=torch.float64).round()) for i in range(num_frames)]


def pad_to_square(frames: torch.Tensor, fill: Sequence[int]) -> torch.Tensor:
    """Frames [T, 3, H, W] uint8 centred on a square canvas of side max(H, W) filled with `fill` (RGB)."""
    t, c, h, w = frames.shape
    side = max(h, w)
    canvas = torch.tensor(list(fill), dtype=frames.dtype).view(1, c, 1, 1).expand(t, c, side, side).clone()
    top, left = (side - h) // 2, (side - w) // 2
    canvas[:, :, top : top + h, left : left + w] = frames
    return canvas


def tokenize_with_placeholders(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` with each `<video>`/`<audio>`/`<image>` as its placeholder id, the text chunks
    between them tokenised separately (no special tokens added)."""
    ids: list[int] = []
    for part in re.split("(" + "|".join(map(re.escape, PLACEHOLDERS)) + ")", text):
        if part in PLACEHOLDERS:
            ids.append(PLACEHOLDERS[part])
        elif part:
            ids.extend(tokenizer(part, add_special_tokens=False)["input_ids"])
    return ids


def pad_batch(rows: Sequence[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ids → (input_ids, attention_mask) [B, L], padded on `side` ("left" | "right")."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(length - len(row), length) if side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


@dataclass
class HumanOmniProcessor:
    """The checkpoint's tokenizer (chat template) + SigLIP image processor + Whisper features + BERT tokenizer."""

    tokenizer: Any
    image_processor: Any
    feature_extractor: Any
    router_tokenizer: Any

    def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    def save_pretrained(self, out_dir: str | Path) -> None:
        """The tokenizer beside the weights (the image/audio settings come from the config's tower values)."""
        self.tokenizer.save_pretrained(out_dir)


def media_processors(config: HumanOmniQwen2Config) -> tuple[Any, Any]:
    """(SigLIP image processor, Whisper feature extractor) from the (embedded) tower configs: the public
    SigLIP/Whisper preprocessor values (bicubic square resize, mean/std 0.5; 128 mel bins, 16 kHz, hop 160,
    padded to the encoder's whole window), so no tower folder is needed for them."""
    from transformers import SiglipImageProcessor, WhisperFeatureExtractor

    vision, audio = config.vision_config, config.audio_config
    if vision is None or audio is None:
        raise ConfigError("humanomni config: tower configs are not resolved (use the backbone or load_pretrained)")
    side = int(vision["image_size"])
    image_processor = SiglipImageProcessor(
        size={"height": side, "width": side}, resample=3, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )  # fmt: skip
    frames = 2 * int(audio.get("max_source_positions", 1500))  # the encoder's exact input length
    if frames % 100:
        raise ConfigError(f"audio tower: max_source_positions {frames // 2} is not a whole number of seconds (×50)")
    feature_extractor = WhisperFeatureExtractor(
        feature_size=int(audio.get("num_mel_bins", 128)), sampling_rate=16000, hop_length=160,
        chunk_length=frames * 160 // 16000, n_fft=400, padding_value=0.0,
    )  # fmt: skip
    return image_processor, feature_extractor


def load_processor(path: Path, config: HumanOmniQwen2Config, router: str | None = None) -> HumanOmniProcessor:
    """The processor of a checkpoint folder: its tokenizer, `media_processors(config)` and the router's BERT
    tokenizer (from `router` or `config.router_path`)."""
    from transformers import AutoTokenizer

    register()  # AutoTokenizer reads config.json: it must know the model type
    image_processor, feature_extractor = media_processors(config)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        raise ConfigError(f"{path}: the tokenizer has no pad token")
    folder = tower_folder(router or config.router_path, path, what="config.json router_path (BERT tokenizer)")
    router_tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return HumanOmniProcessor(tokenizer, image_processor, feature_extractor, router_tokenizer)


@dataclass
class HumanOmniCollator(ChatCollator):
    """Clips → HumanOmni inputs: `input_ids` (with placeholders), `attention_mask`, `images` [B, T, 3, S, S],
    `audios` [B, M, 3000], `prompts` (router inputs) and, in train mode, `labels`."""

    use_video: bool = True
    use_audio: bool = True
    num_frames: int = 8
    x_start_end: bool = True
    square: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.use_video or self.use_audio):
            raise ConfigError("policy.inputs: HumanOmni needs use_video or use_audio")

    def user_text(self) -> str:
        tags = [t for t, on in (("<video>", self.use_video), ("<audio>", self.use_audio)) if on]
        text = "\n".join(tags) + "\n" + self.instruction
        if self.x_start_end:
            for tag, wrapped in WRAPPED.items():
                text = text.replace(tag, wrapped)
        return text

    def _messages(self, sample: Mapping[str, Any], target: str | None) -> list[dict[str, str]]:
        messages = [] if self.system is None else [{"role": "system", "content": self.system}]
        messages.append({"role": "user", "content": self.user_text()})
        if target is not None:
            messages.append({"role": "assistant", "content": target})
        return messages

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not samples:
            raise ConfigError("collator received an empty batch")
        texts, suffixes = self._texts(self._messages, samples)
        rows = [tokenize_with_placeholders(self.tokenizer, t) for t in texts]
        side = self._text_kwargs()["padding_side"]
        input_ids, attention_mask = pad_batch(rows, self.tokenizer.pad_token_id, side)
        batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.use_video:
            batch["images"] = torch.stack([self.frames(s) for s in samples])
            router = self.processor.router_tokenizer(
                [self.instruction] * len(samples), padding=True, truncation=True, max_length=ROUTER_MAX_TOKENS,
                return_tensors="pt",
            )  # fmt: skip
            batch["prompts"] = dict(router)
        if self.use_audio:
            batch["audios"] = torch.stack([self.audio_features(s) for s in samples])
        return self._finish(batch, suffixes, samples)

    def frames(self, sample: Mapping[str, Any]) -> torch.Tensor:
        """uint8 frames [N, 3, H, W] → pixel values [T, 3, S, S] in [−1, 1]."""
        frames = sample["frames"]
        if frames.dim() != 4 or frames.shape[0] == 0:
            raise ClipError(sample["id"], "empty", f"expected frames [N, 3, H, W], got {tuple(frames.shape)}")
        frames = frames[uniform_frame_indices(frames.shape[0], self.num_frames)]
        if self.square:
            frames = pad_to_square(frames, [int(m * 255) for m in self.processor.image_processor.image_mean])
        out = self.processor.image_processor(images=list(frames), return_tensors="pt")
        return out["pixel_values"]

    def audio_features(self, sample: Mapping[str, Any]) -> torch.Tensor:
        """Mono waveform → log-mel [M, F] padded to the extractor's full window."""
        fe = self.processor.feature_extractor
        audio = sample["audio"]
        if int(sample["sample_rate"]) != fe.sampling_rate:
            raise ClipError(
                sample["id"], "sample_rate", f"audio at {sample['sample_rate']} Hz, expected {fe.sampling_rate}"
            )
        if audio.ndim != 1 or audio.numel() == 0:
            raise ClipError(sample["id"], "empty", f"audio must be a non-empty mono waveform, got {tuple(audio.shape)}")
        if audio.numel() > fe.n_samples:
            raise ClipError(
                sample["id"], "window",
                f"{audio.numel() / fe.sampling_rate:.1f} s of audio; Whisper takes at most "
                f"{fe.n_samples / fe.sampling_rate:.0f} s (it would be cut silently)",
            )  # fmt: skip
        if not bool(torch.isfinite(audio).all()):
            raise ClipError(sample["id"], "unreadable", "audio holds NaN or infinite samples")
        feats = fe(audio.to(torch.float32).numpy(), sampling_rate=fe.sampling_rate, return_tensors="pt")
        return feats["input_features"][0]  # [M, nb_max_frames]
