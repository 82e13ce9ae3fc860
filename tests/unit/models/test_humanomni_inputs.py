"""HumanOmni preprocessing and projector maths: frame sampling, placeholder tokenisation, Whisper window, face
pooling, the router mixture and the real-size census (no weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ecr.errors import ClipError, ConfigError
from ecr.models.humanomni import HumanOmniQwen2Config, preset, skeleton
from ecr.models.humanomni.model import AUDIO_TOKEN_INDEX, VIDEO_TOKEN_INDEX
from ecr.models.humanomni.processor import (
    HumanOmniCollator,
    HumanOmniProcessor,
    media_processors,
    pad_batch,
    pad_to_square,
    tokenize_with_placeholders,
    uniform_frame_indices,
)
from ecr.models.humanomni.projector import AllInOneSmall, face_pool, route_mix


def _stored_keys(model: torch.nn.Module) -> list[str]:
    """State-dict keys as a checkpoint stores them (a tied head has no tensor of its own)."""
    tied = model.config.tie_word_embeddings
    return [k for k in model.state_dict() if not (tied and k == "lm_head.weight")]


@pytest.mark.parametrize(
    ("name", "keys", "params"), [("humanomni-0.5b", 1322, 1_373_177_925), ("humanomni-7b", 1715, 9_581_587_845)]
)
def test_real_size_skeleton_matches_the_released_census(name, keys, params):
    model = skeleton(name)
    assert next(model.parameters()).device.type == "meta"
    stored = _stored_keys(model)
    assert len(stored) == keys
    assert sum(p.numel() for p in model.parameters()) == params
    for key in (
        "model.mm_projector.s1_video.b1.conv1.conv.weight", "model.mm_projector.sampler_body.0.weight",
        "model.mm_projector.readout_video.2.bias", "model.mm_projector.mlp_2xgelu_face.0.weight",
        "model.bert_gate.0.weight", "model.bert_gate.2.weight", "model.audio_projector.0.weight",
        "model.audio_projector.2.weight", "model.bert_model.pooler.dense.weight",
        "model.vision_tower.vision_tower.vision_model.head.probe",
        "model.audio_tower.audio_tower.encoder.conv1.weight", "model.audio_tower.audio_tower.classifier.weight",
    ):  # fmt: skip
        assert key in stored, key


def test_half_billion_shapes_follow_the_spec():
    sd = skeleton("humanomni-0.5b").state_dict()
    assert sd["model.bert_gate.0.weight"].shape == (3584, 768)  # gate width 3584 even for 0.5B
    assert sd["model.bert_gate.2.weight"].shape == (3, 3584)
    assert sd["model.audio_projector.0.weight"].shape == (896, 1280)
    assert sd["model.mm_projector.sampler_video.0.weight"].shape == (896, 896, 2, 2, 2)
    assert sd["model.mm_projector.s1_video.b1.se.fc1.weight"].shape == (192, 896, 1, 1)  # r from block input
    assert sd["model.mm_projector.s1_video.b2.se.fc1.weight"].shape == (224, 896, 1, 1)
    assert "model.mm_projector.s1_video.b2.downsample.conv.weight" not in sd


def test_config_parses_the_released_keys_and_keeps_inert_ones():
    data = preset("humanomni-0.5b") | {"hyper_layers": [15, 22], "mm_tunable_parts": "mm_mlp_adapter"}
    cfg = HumanOmniQwen2Config.from_dict(data)
    assert cfg.model_type == "HumanOmni_qwen2" and cfg.num_frames == 8 and cfg.mm_vision_select_layer == -2
    assert cfg.hyper_layers == [15, 22]
    with pytest.raises(ConfigError, match="mm_audio_projector_type"):
        skeleton(preset("humanomni-0.5b") | {"mm_audio_projector_type": None})
    with pytest.raises(ConfigError, match="preset"):
        skeleton("humanomni-3b")


def test_uniform_frame_sampling_is_the_official_rule():
    assert uniform_frame_indices(100, 8) == [6, 19, 31, 43, 56, 68, 80, 93]
    assert uniform_frame_indices(8, 8) == list(range(8))
    short = uniform_frame_indices(3, 8)
    assert len(short) == 8 and short == sorted(short) and set(short) == {0, 1, 2}


def test_pad_to_square_centres_on_the_mean_colour():
    frames = torch.full((2, 3, 4, 8), 9, dtype=torch.uint8)
    square = pad_to_square(frames, (127, 127, 127))
    assert square.shape == (2, 3, 8, 8)
    assert bool((square[:, :, 2:6] == 9).all()) and bool((square[:, :, :2] == 127).all())


class _WordTokenizer:
    """Whitespace 'tokeniser' recording each call: shows which text chunks were tokenised separately."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        assert add_special_tokens is False
        self.calls.append(text)
        return {"input_ids": [len(w) for w in text.split(" ")]}


def test_placeholders_split_the_text_into_separately_tokenised_chunks():
    tok = _WordTokenizer()
    ids = tokenize_with_placeholders(tok, "user <vi_start><video><vi_end> x<audio><au_end> say")
    assert tok.calls == ["user <vi_start>", "<vi_end> x", "<au_end> say"]
    assert ids == [4, 10, VIDEO_TOKEN_INDEX, 8, 1, AUDIO_TOKEN_INDEX, 8, 3]


def test_pad_batch_sides():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


@pytest.fixture(scope="module")
def real_audio_collator() -> HumanOmniCollator:
    """A collator with the released 0.5B preprocessing (SigLIP 224, Whisper 128 × 3000) and no tokenizers."""
    image_processor, feature_extractor = media_processors(HumanOmniQwen2Config.from_dict(preset("humanomni-0.5b")))
    proc = HumanOmniProcessor(None, image_processor, feature_extractor, None)
    return HumanOmniCollator(processor=proc, instruction="Which emotion?")


def test_whisper_features_fill_exactly_3000_frames_and_silence_is_minus_1_5(real_audio_collator):
    sample = {"id": "a", "audio": torch.zeros(16000 * 2), "sample_rate": 16000}
    feats = real_audio_collator.audio_features(sample)
    assert feats.shape == (128, 3000)
    assert torch.allclose(feats, torch.full_like(feats, -1.5))
    tone = {"id": "t", "audio": torch.sin(torch.arange(16000 * 2) / 8.0), "sample_rate": 16000}
    assert real_audio_collator.audio_features(tone).shape == (128, 3000)


@pytest.mark.parametrize(
    ("audio", "rate", "reason"),
    [(torch.zeros(16000 * 31), 16000, "window"), (torch.zeros(8000), 8000, "sample_rate"),
     (torch.full((1600,), float("nan")), 16000, "unreadable"), (torch.zeros(0), 16000, "empty")],
)  # fmt: skip
def test_bad_audio_is_a_clip_error_never_cut_or_zero_filled(real_audio_collator, audio, rate, reason):
    with pytest.raises(ClipError) as err:
        real_audio_collator.audio_features({"id": "bad", "audio": audio, "sample_rate": rate})
    assert err.value.reason == reason


def test_frames_are_resized_to_the_siglip_square_in_minus_one_to_one(real_audio_collator):
    frames = torch.randint(0, 256, (5, 3, 48, 64), dtype=torch.uint8)
    pixels = real_audio_collator.frames({"id": "v", "frames": frames})
    assert pixels.shape == (8, 3, 224, 224)
    assert float(pixels.min()) >= -1.0 and float(pixels.max()) <= 1.0


def test_user_turn_is_the_official_tagged_prompt(real_audio_collator):
    assert real_audio_collator.user_text() == "<vi_start><video><vi_end>\n<au_start><audio><au_end>\nWhich emotion?"


def test_face_pool_is_a_2x2_mean_at_14_and_bilinear_at_27():
    face = torch.randn(3, 14 * 14, 5)
    pooled = face_pool(face)  # [3·49, 5]
    grid = face.reshape(3, 7, 2, 7, 2, 5).mean(dim=(2, 4)).reshape(3 * 49, 5)
    assert torch.allclose(pooled, grid, atol=1e-6)
    big = face_pool(torch.randn(2, 27 * 27, 4))
    assert big.shape == (2 * 196, 4)


def test_router_mixes_branches_in_video_body_face_order():
    video, body, face = (torch.full((2, 3, 4), v) for v in (1.0, 10.0, 100.0))
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    mixed = route_mix(probs, video, body, face)
    assert torch.allclose(mixed[0], video[0]) and torch.allclose(mixed[1], torch.full((3, 4), 53.2))


def test_projector_token_counts_and_causal_time_sampler():
    torch.manual_seed(0)
    proj = AllInOneSmall(8, 16).eval()
    feats = torch.randn(1, 3, 16, 8)  # T = 3 frames of a 4×4 grid
    video, body, face = proj(feats, feats, feats[0])
    assert video.shape == (1, 3 * 4, 16) and body.shape == video.shape and face.shape == (3, 16, 16)
    changed = feats.clone()
    changed[:, 2] += 1.0  # the last frame only influences the last output step (frames {t-1, t})
    video2, _, _ = proj(changed, changed, changed[0])
    assert torch.allclose(video[:, :8], video2[:, :8], atol=1e-6) and not torch.allclose(video[:, 8:], video2[:, 8:])


def test_collator_needs_a_medium():
    with pytest.raises(ConfigError, match="use_video or use_audio"):
        HumanOmniCollator(processor=None, use_video=False, use_audio=False)


def test_numpy_round_ties_match(real_audio_collator):
    # the +1e-6 turns exact .5 ties upwards, as numpy's banker's rounding would not
    assert uniform_frame_indices(2, 2) == [int(np.round(0.5 * 0.5 + 1e-6)), int(np.round(0.5 * 1.5 + 1e-6))]


def _released_config() -> dict:
    """R1-Omni-0.5B's config.json as released (reference spec §7.1), tower paths on the authors' cluster."""
    data = preset("humanomni-0.5b")
    for key in ("vision_config", "audio_config", "router_config", "towers_from_checkpoint"):
        data.pop(key)
    return data | {
        "mm_vision_tower": "/mnt/data/models/siglip-base-patch16-224",
        "mm_audio_tower": "/mnt/data/models/whisper-large-v3",
        "rope_scaling": None, "torch_dtype": "bfloat16", "transformers_version": "4.49.0", "use_cache": True,
        "attention_dropout": 0.0, "initializer_range": 0.02, "image_aspect_ratio": "pad", "use_mm_proj": True,
        "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": False, "mm_projector_lr": None,
        "mm_tunable_parts": "mm_mlp_adapter,audio_projector,mm_language_model", "tokenizer_model_max_length": 2048,
        "tokenizer_padding_side": "right", "hyper_layers": [15, 22],
    }  # fmt: skip


def test_a_released_config_names_the_missing_tower_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(_released_config()))
    with pytest.raises(ConfigError, match="mm_vision_tower.*siglip-base-patch16-224"):
        skeleton(tmp_path)
    towers = preset("humanomni-0.5b")
    embedded = _released_config() | {k: towers[k] for k in ("vision_config", "audio_config", "router_config")}
    (tmp_path / "config.json").write_text(json.dumps(embedded | {"towers_from_checkpoint": True}))
    assert sum(p.numel() for p in skeleton(tmp_path).parameters()) == 1_373_177_925
