"""Audio-in-video (TMRoPE): one timeline for a clip's sound and picture, and the sequential layout beside it."""

from __future__ import annotations

import pytest
import torch

from ecr.errors import ClipError, MediaTokenMismatchError
from ecr.models import PolicyConfig, build_backbone, load_policy
from ecr.models.backbone import completion_positions
from ecr.models.hf import model_inputs

SMALL = {"min_pixels": 3136, "max_pixels": 3136}  # 2 x 2 merged tokens per temporal patch
PER_SECOND = 25  # position_id_per_seconds of the tiny model (as in the released checkpoints)
CHUNK = 2 * PER_SECOND  # seconds_per_chunk = 2


def _backbone(path, load: bool = False, **inputs):
    cfg = PolicyConfig(model=str(path), inputs={**SMALL, **inputs}, lora={"enabled": False})
    return load_policy(cfg) if load else build_backbone(cfg)


def _ids(bb, name: str) -> int:
    return bb.tokenizer.convert_tokens_to_ids(name)


def _span(bb, row: torch.Tensor) -> tuple[int, int]:
    """[first, last) token indices strictly inside `<|audio_bos|>` … `<|audio_eos|>` of an interleaved row."""
    start = int((row == _ids(bb, "<|audio_bos|>")).nonzero()[0]) + 1
    return start, int((row == _ids(bb, "<|audio_eos|>")).nonzero()[0])


def _rope_args(batch) -> tuple:
    return (
        batch["input_ids"],
        None,
        batch["video_grid_thw"],
        batch["attention_mask"],
        batch["use_audio_in_video"],
        batch["feature_attention_mask"].sum(-1),
        batch["video_second_per_grid"],
    )


# ------------------------------------------------------------------------------------------------ layout
def test_interleaved_prompt_is_one_video_item_chunked_by_time(tiny_omni, long_clip_samples):
    bb = _backbone(tiny_omni)
    batch = bb.collator("generate")(long_clip_samples)
    assert batch["use_audio_in_video"] is True
    tok = bb.tokenizer
    video, audio = tok.video_token_id, tok.audio_token_id
    for i, s in enumerate(long_clip_samples):
        row = batch["input_ids"][i][batch["attention_mask"][i].bool()]
        text = tok.decode(row)
        # one video item; its audio is inside it, no separate audio item
        assert text.count("<|vision_bos|><|audio_bos|>") == 1 and text.count("<|audio_bos|>") == 1
        assert "<|audio_eos|><|vision_eos|>" in text
        spg = 2 * s["duration"] / 8  # temporal patch of 2 frames, frames at equal-segment midpoints
        assert float(batch["video_second_per_grid"][i]) == pytest.approx(spg)
        # expected: 2 s chunks, video first; video grid g at g*spg s, audio token k at k/25 s
        grid_t, grid_h, grid_w = batch["video_grid_thw"][i].tolist()
        video_chunk = [int(g * spg * PER_SECOND) // CHUNK for g in range(grid_t)]
        audio_chunk = [k // CHUNK for k in range(int((row == audio).sum()))]
        expected: list[int] = []
        for c in range(max(video_chunk + audio_chunk) + 1):
            expected += [video] * (grid_h * grid_w // 4) * video_chunk.count(c) + [audio] * audio_chunk.count(c)
        start, end = _span(bb, row)
        assert row[start:end].tolist() == expected
        assert len(set(audio_chunk)) > 1  # several chunks: the layout is really interleaved


def test_window_interleaves_on_its_own_timeline(tiny_omni, long_clip_samples):
    """The [1, 4) s window of a 5 s clip is laid out like a 3 s clip: times start at the window, not the file."""
    bb = _backbone(tiny_omni)
    batch = bb.collator("generate")(long_clip_samples[1:])  # window, 3 s clip
    tok = bb.tokenizer
    ids = batch["input_ids"]
    kinds = (ids == tok.video_token_id).long() + 2 * (ids == tok.audio_token_id).long()  # [2, L]
    assert kinds.any() and torch.equal(kinds[0], kinds[1])
    assert torch.equal(batch["video_second_per_grid"][0], batch["video_second_per_grid"][1])


def test_sequential_layout_stays_available(tiny_omni, long_clip_samples):
    bb = _backbone(tiny_omni, audio_in_video=False)
    batch = bb.collator("train")(long_clip_samples)
    assert batch["use_audio_in_video"] is False
    text = bb.tokenizer.decode(batch["input_ids"][0])
    assert "<|vision_eos|><|audio_bos|>" in text and "<|vision_bos|><|audio_bos|>" not in text
    # only one medium: nothing to interleave, whatever the flag says
    video_only = _backbone(tiny_omni, use_audio=False).collator("generate")(long_clip_samples[:1])
    assert video_only["use_audio_in_video"] is False and "input_features" not in video_only


def test_audio_that_does_not_cover_the_window_is_a_clip_error(tiny_omni, long_clip_samples):
    s = long_clip_samples[0]
    short = dict(s, audio=s["audio"][: s["audio"].numel() // 2])  # 2.5 s of audio for a 5 s window
    with pytest.raises(ClipError, match="duration_mismatch|cannot share one timeline"):
        _backbone(tiny_omni).collator("generate")([short])
    _backbone(tiny_omni, audio_in_video=False).collator("generate")([short])  # sequential: no shared timeline


# ------------------------------------------------------------------------------------------------ positions
def test_positions_equal_the_thinkers_for_the_full_interleaved_sequence(tiny_omni, long_clip_samples, clip_samples):
    bb = _backbone(tiny_omni, load=True)
    bb.model.eval()
    samples = [long_clip_samples[0], clip_samples[0], long_clip_samples[2]]  # 5 s, 2 s, 3 s: left padding
    batch = bb.collator("generate")(samples)
    assert (batch["attention_mask"][:, 0] == 0).any()
    completion = torch.randint(11, 100, (3, 4))
    seen: dict[str, torch.Tensor] = {}

    def record(_module, _args, kwargs) -> None:  # the positions the thinker's own forward hands its LM
        seen.setdefault("positions", kwargs["position_ids"][-3:])  # [3, B, L] (a leading text row dropped)

    hook = bb.base_model.model.language_model.register_forward_pre_hook(record, with_kwargs=True)
    inputs = model_inputs(batch)
    inputs["input_ids"] = torch.cat([batch["input_ids"], completion], 1)
    inputs["attention_mask"] = torch.cat([batch["attention_mask"], torch.ones_like(completion)], 1)
    with torch.no_grad():
        prompt = bb.encode_prompt(batch)
        bb.model(**inputs)
        full = seen.pop("positions")  # [3, B, P+C]
        bb.generate(prompt, max_new_tokens=1, do_sample=False)
        prefill = seen.pop("positions")  # [3, B, P]: generation from the encoding positions it the same way
    hook.remove()
    p = batch["input_ids"].shape[1]
    real = batch["attention_mask"].bool()
    for d in range(3):
        assert torch.equal(prompt.position_ids[d][real], full[d, :, :p][real])
        assert torch.equal(prompt.position_ids[d][real], prefill[d][real])
    assert torch.equal(completion_positions(prompt.next_position, 4, 3), full[:, :, p:])
    # and the interleaved positions are not the sequential ones
    sequential, _ = bb.base_model.model.get_rope_index(*_rope_args({**batch, "use_audio_in_video": False}))
    assert not torch.equal(sequential, prompt.position_ids)


def test_audio_of_second_s_sits_within_the_video_frames_of_second_s(tiny_omni, long_clip_samples):
    bb = _backbone(tiny_omni, load=True)
    batch = bb.collator("generate")(long_clip_samples)
    prompt = bb.encode_prompt(batch)
    tok = bb.tokenizer
    for i in range(len(long_clip_samples)):
        row, t = batch["input_ids"][i], prompt.position_ids[0, i]
        start, end = _span(bb, row)
        base = int(t[start])  # the first video grid is at time 0
        video_t = t[start:end][row[start:end] == tok.video_token_id] - base
        audio_t = t[start:end][row[start:end] == tok.audio_token_id] - base
        spg = float(batch["video_second_per_grid"][i])
        assert torch.equal(audio_t, torch.arange(audio_t.numel()))  # 25 positions per second of audio
        grid_t = sorted(set(video_t.tolist()))
        assert grid_t == [int(g * spg * PER_SECOND) for g in range(len(grid_t))]
        for k, pos in enumerate(audio_t.tolist()):
            g = int(k / PER_SECOND // spg)  # the temporal patch (2 frames) showing second k/25
            assert grid_t[g] <= pos < (g + 1) * spg * PER_SECOND  # [start, end) of that patch in positions
        # in sequence order, every token's 2 s chunk never goes back in time
        chunks = (t[start:end] - base) // CHUNK
        assert (chunks[1:] >= chunks[:-1]).all()


# --------------------------------------------------------------------------------------------- placeholders
def test_interleaved_placeholders_match_the_towers_and_a_wrong_count_raises(tiny_omni, long_clip_samples):
    bb = _backbone(tiny_omni, load=True)
    batch = bb.collator("generate")(long_clip_samples)
    thinker = bb.base_model
    with torch.no_grad():
        video = thinker.get_video_features(batch["pixel_values_videos"], batch["video_grid_thw"]).pooler_output
        audio = thinker.get_audio_features(batch["input_features"], batch["feature_attention_mask"])
    per_audio = thinker.model.audio_tower._get_feat_extract_output_lengths(batch["feature_attention_mask"].sum(-1))[1]
    assert audio.last_hidden_state.shape[0] == int(per_audio.sum())
    for i in range(len(long_clip_samples)):
        assert int((batch["input_ids"][i] == bb.tokenizer.video_token_id).sum()) == video[i].shape[0]
        assert int((batch["input_ids"][i] == bb.tokenizer.audio_token_id).sum()) == int(per_audio[i])
    bb.check_media(batch)
    cut = dict(batch, input_ids=batch["input_ids"].clone())
    row = cut["input_ids"][1]
    last_audio = int((row == bb.tokenizer.audio_token_id).nonzero()[-1])
    row[last_audio] = bb.tokenizer.pad_token_id
    with pytest.raises(MediaTokenMismatchError, match=rf"audio .*{long_clip_samples[1]['id']}: 74 tokens vs 75"):
        bb.check_media(cut)
    with pytest.raises(MediaTokenMismatchError, match="use_audio_in_video=False but the prompt layout"):
        bb.check_media(dict(batch, use_audio_in_video=False))


def test_chunking_follows_the_model_config(tiny_omni, long_clip_samples, tmp_path):
    """The collator chunks with the thinker config's `seconds_per_chunk`, the one `get_rope_index` uses."""
    import json
    import shutil

    folder = shutil.copytree(tiny_omni, tmp_path / "one_second_chunks")
    config = json.loads((folder / "config.json").read_text())
    assert (config["position_id_per_seconds"], config["seconds_per_chunk"]) == (PER_SECOND, 2)
    (folder / "config.json").write_text(json.dumps({**config, "seconds_per_chunk": 1}))
    bb = _backbone(folder)
    collator = bb.collator("generate")
    assert collator.seconds_per_chunk == 1
    batch = collator(long_clip_samples[2:])  # the 3 s clip: 3 one-second chunks
    row = batch["input_ids"][0]
    start, end = _span(bb, row)
    is_audio = (row[start:end] == bb.tokenizer.audio_token_id).long()
    assert int((is_audio[1:] - is_audio[:-1] == 1).sum()) == 3  # three audio runs
    bb.load()
    bb.model.eval()
    seen: dict[str, torch.Tensor] = {}
    hook = bb.base_model.model.language_model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.update(positions=kw["position_ids"][-3:]) or None, with_kwargs=True
    )
    with torch.no_grad():
        bb.model(**model_inputs(batch))
    hook.remove()
    assert torch.equal(bb.encode_prompt(batch).position_ids, seen["positions"])
