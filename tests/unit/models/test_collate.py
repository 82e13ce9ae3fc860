"""Collators: assistant-only labels, padding sides, media-token checks, picklability."""

from __future__ import annotations

import pickle

import pytest
import torch

from ecr.errors import ClipError, ConfigError, MediaTokenMismatchError
from ecr.models import PolicyConfig, build_backbone
from ecr.models.collate import IGNORE_INDEX, check_media_tokens
from ecr.models.qwen2_5_omni import qwen_omni_audio_tokens, video_token_counts
from ecr.prompts import DEFAULT_INSTRUCTION, format_target


def _backbone(path, **inputs):
    return build_backbone(PolicyConfig(model=str(path), inputs={"min_pixels": 3136, "max_pixels": 3136, **inputs}))


def test_train_labels_cover_exactly_the_assistant_turn(tiny_omni, clip_samples):
    bb = _backbone(tiny_omni)
    batch = bb.collator("train")(clip_samples[:3])
    tok = bb.tokenizer
    assert batch["labels"].shape == batch["input_ids"].shape
    for i, s in enumerate(clip_samples[:3]):
        labels = batch["labels"][i]
        kept = labels[labels != IGNORE_INDEX]
        assert tok.decode(kept) == format_target(s["explanation"], s["label"]) + "<|im_end|>"
        # the kept tokens are one contiguous block ending at the end-of-turn token
        idx = (labels != IGNORE_INDEX).nonzero().flatten()
        assert (idx[1:] - idx[:-1] == 1).all()
        assert int(batch["input_ids"][i, idx[-1]]) == tok.convert_tokens_to_ids("<|im_end|>")
        # no media placeholder is ever a label
        assert not torch.isin(kept, torch.tensor([tok.video_token_id, tok.audio_token_id])).any()
    # right padding: padded positions are masked and ignored
    pad = batch["attention_mask"] == 0
    assert (batch["labels"][pad] == IGNORE_INDEX).all()
    assert (batch["attention_mask"][:, 0] == 1).all()
    assert batch["meta"]["ids"] == [s["id"] for s in clip_samples[:3]]


def test_generate_mode_is_left_padded_prompt_only(tiny_omni, clip_samples):
    bb = _backbone(tiny_omni)
    batch = bb.collator("generate")(clip_samples[:3])
    assert "labels" not in batch
    assert (batch["attention_mask"][:, -1] == 1).all()  # left padding
    text = bb.tokenizer.decode(batch["input_ids"][0], skip_special_tokens=False)
    assert text.endswith("<|im_start|>assistant\n")
    assert DEFAULT_INSTRUCTION in text and "<think>" in text  # the instruction mentions the tags; no target


def test_media_placeholders_match_features_and_clip_timing(tiny_omni, clip_samples):
    bb = _backbone(tiny_omni)
    batch = bb.collator("train")(clip_samples[:2])
    tok = bb.tokenizer
    merge = bb.processor.video_processor.merge_size
    for i in range(2):
        n_video = int((batch["input_ids"][i] == tok.video_token_id).sum())
        assert n_video == int(batch["video_grid_thw"][i].prod()) // merge**2
    # 2 s of audio = 200 mel frames = 50 tokens
    assert qwen_omni_audio_tokens(batch["feature_attention_mask"].sum(-1)).tolist() == [50, 50]
    # seconds per temporal patch from the clip's own frame spacing: 2 frames x (2 s / 4 frames)
    assert batch["video_second_per_grid"].tolist() == pytest.approx([1.0, 1.0], abs=1e-3)


def test_audio_token_formula_matches_the_model(tiny_omni):
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(tiny_omni, local_files_only=True)
    lengths = torch.tensor([1, 2, 3, 4, 99, 100, 101, 200, 2999, 3000])
    _, expected = model.model.audio_tower._get_feat_extract_output_lengths(lengths)
    assert torch.equal(qwen_omni_audio_tokens(lengths), expected)


@pytest.mark.parametrize("audio_in_video", [True, False], ids=["interleaved", "sequential"])
def test_cut_sequence_raises_mismatch_naming_the_clip(tiny_omni, clip_samples, audio_in_video):
    bb = _backbone(tiny_omni, audio_in_video=audio_in_video)
    batch = bb.collator("generate")(clip_samples[:2])
    audio_id = bb.tokenizer.audio_token_id
    first = int((batch["input_ids"][1] == audio_id).nonzero()[0])
    batch["input_ids"][1, first : first + 10] = bb.tokenizer.pad_token_id  # 10 placeholders lost, e.g. by a cut
    fmask = batch["feature_attention_mask"]
    with pytest.raises(MediaTokenMismatchError, match=rf"audio .*{clip_samples[1]['id']}: 40 tokens vs 50 features"):
        check_media_tokens(
            batch["input_ids"],
            clip_ids=[s["id"] for s in clip_samples[:2]],
            audio_token_id=audio_id,
            audio_features=qwen_omni_audio_tokens(fmask.sum(-1)),
        )


@pytest.mark.parametrize("audio_in_video", [True, False], ids=["interleaved", "sequential"])
def test_processor_model_geometry_disagreement_raises_before_forward(tiny_omni, clip_samples, audio_in_video):
    """A processor whose merge size differs from the model's emits the wrong number of video tokens."""
    bb = _backbone(tiny_omni, audio_in_video=audio_in_video)
    bb.processor.video_processor.merge_size = 1  # consistent with itself, not with the model (merge 2)
    batch = bb.collator("train")(clip_samples[:1])
    bb.load()
    with pytest.raises(MediaTokenMismatchError, match=r"video placeholder tokens .*32 tokens vs 8 features"):
        bb.loss(batch)


def test_too_long_is_a_config_error_never_a_truncation(tiny_omni, clip_samples):
    bb = _backbone(tiny_omni, max_length=40)
    with pytest.raises(ConfigError, match="exceed inputs.max_length=40"):
        bb.collator("generate")(clip_samples[:1])


def test_check_media_tokens_names_the_clip():
    ids = torch.tensor([[5, 9, 9, 9, 1], [5, 9, 9, 9, 9]])  # video token 9
    grid = torch.tensor([[1, 4, 4], [1, 4, 4]])  # 16 patches / merge 2² = 4 tokens
    counts = video_token_counts(grid, 2)
    with pytest.raises(MediaTokenMismatchError, match="a: 3 tokens vs 4 features"):
        check_media_tokens(ids, clip_ids=["a", "b"], video_token_id=9, video_features=counts)
    check_media_tokens(ids[1:], clip_ids=["b"], video_token_id=9, video_features=counts[1:])


def test_collator_rejects_bad_audio_and_missing_explanations(tiny_omni, clip_samples):
    coll = _backbone(tiny_omni).collator("train")
    wrong_rate = dict(clip_samples[0], sample_rate=8000)
    with pytest.raises(ClipError, match="8000 Hz"):
        coll([wrong_rate])
    with pytest.raises(ConfigError, match="explanation"):
        coll([dict(clip_samples[0], explanation=None)])
    # generation needs no explanation
    _backbone(tiny_omni).collator("generate")([dict(clip_samples[0], explanation=None)])


def test_collator_pickles_for_dataloader_workers(tiny_omni, clip_samples):
    coll = _backbone(tiny_omni).collator("train")
    clone = pickle.loads(pickle.dumps(coll))
    a, b = coll(clip_samples[:2]), clone(clip_samples[:2])
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert torch.equal(a["pixel_values_videos"], b["pixel_values_videos"])


def test_max_pixels_controls_video_tokens(tiny_omni, clip_samples):
    small = _backbone(tiny_omni).collator("generate")(clip_samples[:1])
    big = build_backbone(
        PolicyConfig(model=str(tiny_omni), inputs={"min_pixels": 112 * 112, "max_pixels": 112 * 112})
    ).collator("generate")(clip_samples[:1])
    assert big["video_grid_thw"][0].prod() == 4 * small["video_grid_thw"][0].prod()
