"""A tiny, random-initialised Qwen2.5-Omni thinker + processor, written as an ordinary Hugging Face folder.

Tests, the demo and the benchmarks need an Omni model that exists offline and trains in seconds on a CPU.
`build_tiny_omni` writes exactly what a real checkpoint folder holds — `config.json` + safetensors of a
`Qwen2_5OmniThinkerForConditionalGeneration`, a tokenizer and a `Qwen2_5OmniProcessor` — so the normal loading
path (`ecr.models.load_policy`) loads it like any other model; nothing elsewhere special-cases "tiny".

The tokenizer is a byte-level BPE trained here on the vocabulary the models will see (the instruction, the
DFEW/MAFW labels, explanation-like sentences, the chat roles). `<think>`, `</think>`, `<answer>`, `</answer>`
are added tokens (single ids, not special, so decoding keeps them): a tiny model then learns the output format
in a few dozen steps. The Omni special tokens (`<|im_start|>`, `<|VIDEO|>`, …) are registered the way the real
Qwen2.5-Omni tokenizer names them, which is what the processor reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from ecr.errors import ConfigError
from ecr.labels import DFEW_LABELS, MAFW_LABELS
from ecr.prompts import DEFAULT_INSTRUCTION, format_target

OMNI_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|vision_bos|>",
    "<|vision_eos|>",
    "<|vision_pad|>",
    "<|IMAGE|>",
    "<|VIDEO|>",
)
FORMAT_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")

# A ChatML template that renders the multimodal content parts of `ecr.prompts.build_messages` (same layout as
# the real Qwen2.5-Omni template, without its long default system prompt).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'video' %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif c['type'] == 'image' %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif c['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_EXPLANATION_SENTENCES = (
    "The person smiles broadly and the voice sounds cheerful.",
    "Her eyebrows are raised and her mouth is open in shock.",
    "He frowns, clenches his jaw and raises his voice.",
    "Tears run down her face and she speaks in a low, shaking voice.",
    "The character wrinkles the nose and turns away in disgust.",
    "His eyes widen and he steps back, trembling with fear.",
    "The face is relaxed and the tone of voice is calm and even.",
    "She looks worried, bites her lip and speaks quickly.",
    "He shrugs and sighs, looking helpless and tired.",
    "The speaker sneers with a cold, contemptuous look.",
    "The colours of the scene are dark and the music is slow.",
    "Bright red and blue frames flash while a high tone plays.",
    "In the video, the character's facial expression and tone of voice suggest a strong emotion.",
    "The audio contains a steady tone; the frames show moving shapes.",
)


def tokenizer_corpus() -> list[str]:
    """Texts the tiny BPE is trained on: everything a prompt or target is made of."""
    from ecr.data.synth import FILLER_SENTENCES, PROFILES  # the synthetic dataset's explanation phrases

    labels = sorted(set(DFEW_LABELS) | set(MAFW_LABELS))
    corpus = [DEFAULT_INSTRUCTION, "<|im_start|>system", "<|im_start|>user", "<|im_start|>assistant"] * 4
    sentences = list(_EXPLANATION_SENTENCES) + list(FILLER_SENTENCES)
    sentences += [s for prof in PROFILES for s in (*prof.visual, *prof.audio, *prof.conclusion)]
    corpus += sentences
    corpus += [format_target(s, lbl) for s in sentences for lbl in labels]
    corpus += [" ".join(labels), ", ".join(lbl.capitalize() for lbl in labels)]
    return corpus * 4


def build_tiny_tokenizer(out_dir: str | Path, vocab_size: int = 1024):
    """Train a byte-level BPE on `tokenizer_corpus()` and save it as a Qwen2 tokenizer folder.

    Returns the loaded `PreTrainedTokenizerBase` (so callers see exactly what `from_pretrained` sees).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(OMNI_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "model_max_length": 32768,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "bos_token": None,
        "unk_token": None,
        "extra_special_tokens": {
            "image_token": "<|IMAGE|>",
            "audio_token": "<|AUDIO|>",
            "video_token": "<|VIDEO|>",
            "vision_bos_token": "<|vision_bos|>",
            "vision_eos_token": "<|vision_eos|>",
            "audio_bos_token": "<|audio_bos|>",
            "audio_eos_token": "<|audio_eos|>",
        },
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    tokenizer.add_tokens(list(FORMAT_TOKENS))  # plain added tokens: one id each, kept by decode
    tokenizer.save_pretrained(out)
    return AutoTokenizer.from_pretrained(out, local_files_only=True)


def build_tiny_omni(
    out_dir: str | Path,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 1024,
    seed: int = 0,
    audio_window_seconds: int = 10,
) -> Path:
    """Write a random-initialised Qwen2.5-Omni thinker, its tokenizer and processor to `out_dir`.

    `hidden_size` sets the language model, vision and audio widths alike (64 → ≈0.6 M parameters,
    256 → ≈6 M). `audio_window_seconds` is the feature extractor's padded window (the real model uses 30 s;
    shorter keeps mel extraction cheap, and longer audio is refused by the collator, never cut). Returns
    `out_dir`, loadable with `Qwen2_5OmniProcessor.from_pretrained` and
    `Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained`.
    """
    import torch
    from transformers import (
        Qwen2_5OmniProcessor,
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        WhisperFeatureExtractor,
    )

    if hidden_size % (2 * num_heads) or hidden_size // num_heads % 8:
        raise ValueError(f"hidden_size={hidden_size} must split into {num_heads} heads of a multiple of 8")
    out = Path(out_dir)
    tokenizer = build_tiny_tokenizer(out, vocab_size=vocab_size)
    processor = Qwen2_5OmniProcessor(
        image_processor=Qwen2VLImageProcessor(),
        video_processor=Qwen2VLVideoProcessor(),
        feature_extractor=WhisperFeatureExtractor(
            feature_size=128, sampling_rate=16000, chunk_length=audio_window_seconds
        ),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    ids = tokenizer.convert_tokens_to_ids
    head_dim = hidden_size // num_heads
    # mrope sections split head_dim/2 rotary frequencies over (time, height, width).
    half = head_dim // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    config = Qwen2_5OmniThinkerConfig(
        audio_config=dict(
            d_model=hidden_size,
            encoder_layers=num_layers,
            encoder_attention_heads=num_heads,
            encoder_ffn_dim=2 * hidden_size,
            num_mel_bins=128,
            output_dim=hidden_size,
            n_window=100,
            max_source_positions=1500,
        ),
        vision_config=dict(
            depth=num_layers,
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_heads=num_heads,
            out_hidden_size=hidden_size,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[num_layers - 1],
        ),
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=max(1, num_heads // 2),
            max_position_embeddings=8192,
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope},
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ),
        audio_token_index=tokenizer.audio_token_id,
        image_token_index=tokenizer.image_token_id,
        video_token_index=tokenizer.video_token_id,
        audio_start_token_id=ids("<|audio_bos|>"),
        audio_end_token_id=ids("<|audio_eos|>"),
        vision_start_token_id=ids("<|vision_bos|>"),
        vision_end_token_id=ids("<|vision_eos|>"),
        user_token_id=ids("<|im_start|>"),
        position_id_per_seconds=25,
        seconds_per_chunk=2,
    )
    torch.manual_seed(seed)
    model = Qwen2_5OmniThinkerForConditionalGeneration(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_causal_lm(
    out_dir: str | Path, hidden_size: int = 64, num_layers: int = 2, vocab_size: int = 1024, seed: int = 0
) -> Path:
    """Write a tiny random Qwen2 causal LM with the same tokenizer (for the text-only backbone)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    tokenizer = build_tiny_tokenizer(out, vocab_size=vocab_size)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    return out


def tiny_command(
    out: Path,
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 1024,
    seed: int = 0,
    kind: Literal["omni", "causal_lm"] = "omni",
) -> int:
    """Write a tiny random model folder (offline test/demo model): a Qwen2.5-Omni thinker or a text causal LM.

    Args:
        out: Folder to write (created; existing files are overwritten).
        hidden_size: Width of the language model and of both media towers (64 ≈ 0.6 M params).
        num_layers: Layers of the language model and of each tower.
        vocab_size: BPE vocabulary size (before the Omni special tokens and the format tokens).
        seed: Seed of the random initialisation.
        kind: "omni" (thinker + tokenizer + processor, backbone qwen2_5_omni) or "causal_lm" (a Qwen2 text
            LM + the same tokenizer, backbone causal_lm).
    """
    if kind not in ("omni", "causal_lm"):
        raise ConfigError(f"--kind: {kind!r} is not 'omni' or 'causal_lm'")
    build = build_tiny_omni if kind == "omni" else build_tiny_causal_lm
    path = build(out, hidden_size=hidden_size, num_layers=num_layers, vocab_size=vocab_size, seed=seed)
    what = "Qwen2.5-Omni thinker" if kind == "omni" else "Qwen2 causal LM"
    print(f"tiny {what} ({count_parameters(path):,} parameters) written to {path}")
    return 0


def count_parameters(folder: str | Path) -> int:
    """Parameters stored in a model folder's safetensors files."""
    from safetensors.torch import load_file

    return sum(t.numel() for f in sorted(Path(folder).glob("*.safetensors")) for t in load_file(f).values())
