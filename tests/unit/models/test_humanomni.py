"""The `humanomni` backbone on a tiny checkpoint in the released layout (`build_tiny_humanomni`), loaded through
the same path as a real folder: key set, load accounting, save/load round trip, encode-once scoring, encoder
calls, left-padded batched generation and the media errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ecr.errors import ConfigError, MediaTokenMismatchError
from ecr.fixtures.tiny_models import build_tiny_humanomni, tiny_command
from ecr.models import PolicyConfig, build_backbone, load_policy
from ecr.models.backbone import PolicyBackbone
from ecr.models.hf import model_inputs
from ecr.models.humanomni import load_pretrained, skeleton
from ecr.models.humanomni.processor import pad_batch
from ecr.models.scoring import gather_logprobs

RELEASED_PREFIXES = (
    "model.embed_tokens.", "model.layers.", "model.norm.", "model.vision_tower.vision_tower.vision_model.",
    "model.mm_projector.", "model.bert_model.", "model.bert_gate.0.", "model.bert_gate.2.",
    "model.audio_tower.audio_tower.encoder.", "model.audio_tower.audio_tower.projector.",
    "model.audio_tower.audio_tower.classifier.", "model.audio_projector.0.", "model.audio_projector.2.",
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_ho(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny HumanOmni with a 3 s Whisper window (50 audio tokens) so forwards stay fast."""
    return build_tiny_humanomni(tmp_path_factory.mktemp("tiny_humanomni"), audio_positions=150)


def _policy(folder: Path, **kw) -> PolicyConfig:
    kw.setdefault("lora", {"enabled": False})
    return PolicyConfig(backbone="humanomni", model=str(folder), **kw)


@pytest.fixture(scope="module")
def policy(tiny_ho: Path):
    backbone = load_policy(_policy(tiny_ho))
    backbone.model.eval()
    return backbone


def test_tiny_checkpoint_has_the_released_key_set(tiny_ho):
    stored = set(load_file(tiny_ho / "model.safetensors"))
    model = skeleton(tiny_ho)
    expected = {k for k in model.state_dict() if k != "lm_head.weight"}  # tied head: not stored
    assert stored == expected
    assert all(k.startswith(RELEASED_PREFIXES) for k in stored), sorted(stored)[:5]
    config = json.loads((tiny_ho / "config.json").read_text())
    assert config["model_type"] == "HumanOmni_qwen2" and config["mm_vision_tower"] == "siglip"
    assert config["vision_config"] is None  # like a released file: the tower is named by path only
    for tower in ("siglip", "whisper", "bert"):
        assert (tiny_ho / tower / "config.json").is_file()


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_weights(folder: Path, edit) -> None:
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def test_loading_accounts_for_every_tensor(tiny_ho, tmp_path):
    model = load_pretrained(tiny_ho)
    siglip = load_file(tiny_ho / "siglip" / "model.safetensors")
    tower = model.model.vision_tower.vision_tower.vision_model.state_dict()
    assert all(torch.equal(tower[k], v) for k, v in siglip.items() if k in tower)

    no_gate = _copy(tiny_ho, tmp_path / "no_gate")
    _edit_weights(no_gate, lambda t: t.pop("model.bert_gate.0.weight"))
    with pytest.raises(ConfigError, match=r"missing.*bert_gate"):  # never a silently random router gate
        load_pretrained(no_gate)

    extra = _copy(tiny_ho, tmp_path / "extra")
    _edit_weights(extra, lambda t: t.update({"model.unknown.weight": torch.zeros(2)}))
    with pytest.raises(ConfigError, match="fit no module"):
        load_pretrained(extra)


def test_towers_from_the_checkpoint_need_no_tower_folders(tiny_ho, tmp_path):
    bare = _copy(tiny_ho, tmp_path / "bare")
    shutil.rmtree(bare / "siglip")
    shutil.rmtree(bare / "whisper")
    with pytest.raises(ConfigError, match="mm_vision_tower"):
        load_pretrained(bare)
    config = json.loads((tiny_ho / "config.json").read_text())
    from ecr.models.humanomni.config import config_from, resolve_towers

    full = config_from(tiny_ho)
    resolve_towers(full, tiny_ho)
    config.update(vision_config=full.vision_config, audio_config=full.audio_config)
    (bare / "config.json").write_text(json.dumps(config))
    stored = load_pretrained(bare, towers_from_checkpoint=True)
    reference = load_pretrained(tiny_ho)
    for (name, a), (_, b) in zip(stored.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_vision_features_are_siglips_penultimate_hidden_state(tiny_ho, policy):
    from transformers import SiglipVisionModel

    pixels = torch.randn(3, 3, 32, 32)
    reference = SiglipVisionModel.from_pretrained(tiny_ho / "siglip").eval()
    expected = reference(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    got = policy.base_model.model.vision_tower(pixels)
    assert got.shape == (3, 16, 32)
    torch.testing.assert_close(got, expected)


def test_protocol_lora_on_the_language_model_only(tiny_ho):
    backbone = build_backbone(_policy(tiny_ho, lora={"r": 4}))
    assert isinstance(backbone, PolicyBackbone)
    model = backbone.load()
    trainable = backbone.trainable_parameter_names()
    assert trainable and all("lora_" in n and ".model.layers." in n for n in trainable)
    assert not backbone.prompt_encoding_is_trainable()
    with backbone.adapter_disabled():
        pass
    assert model is backbone.load()  # idempotent
    with pytest.raises(ConfigError, match="freeze_vision"):  # SigLIP runs under no_grad: it could never train
        build_backbone(_policy(tiny_ho, freeze_vision=False))


def test_round_trip_keeps_the_logits(policy, clip_samples, tmp_path):
    batch = policy.collator("train")(clip_samples[:2])
    with torch.no_grad():
        before = policy.model(**model_inputs(batch)).logits
    out = policy.save_pretrained(tmp_path / "saved")
    again = load_policy(_policy(out))
    again.model.eval()
    with torch.no_grad():
        after = again.model(**model_inputs(again.collator("train")(clip_samples[:2]))).logits
    assert torch.equal(before, after)


def test_loss_counts_assistant_tokens_and_placeholders_expand(policy, clip_samples):
    batch = policy.collator("train")(clip_samples[:2])
    assert (batch["input_ids"] == -201).sum(-1).tolist() == [1, 1]
    assert (batch["input_ids"] == -202).sum(-1).tolist() == [1, 1]
    assert batch["audios"].shape == (2, 128, 300) and batch["images"].shape == (2, 8, 3, 32, 32)
    loss, n = policy.loss(batch)
    assert torch.isfinite(loss) and n == int((batch["labels"][:, 1:] != -100).sum()) > 0
    prompt = policy.collator("generate")(clip_samples[:2])
    encoded = policy.encode_prompt(prompt)
    assert encoded.inputs_embeds.shape[1] == prompt["input_ids"].shape[1] - 2 + 8 * 4 + 50  # 32 visual + 50 audio


def _completions(policy, rows: int, length: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(3, len(policy.tokenizer), (rows, length))
    mask = torch.ones_like(ids)
    mask[0, -2:] = 0
    return ids, mask


def test_encode_once_logprobs_equal_a_plain_forward(policy, clip_samples):
    batch = policy.collator("generate")(clip_samples[:2])
    encoded = policy.encode_prompt(batch)
    ids, mask = _completions(policy, 2)
    with torch.no_grad():
        scores = policy.score_completions(encoded, ids, mask)
        full = policy.model(
            input_ids=torch.cat([batch["input_ids"], ids], 1),
            attention_mask=torch.cat([batch["attention_mask"], mask], 1),
            images=batch["images"], audios=batch["audios"], prompts=batch["prompts"],
        ).logits  # fmt: skip
        plain = gather_logprobs(full[:, -ids.shape[1] - 1 : -1], ids) * mask
        grouped = policy.score_completions(
            encoded, ids.repeat_interleave(2, 0), mask.repeat_interleave(2, 0), group_size=2
        )
    torch.testing.assert_close(scores.logprobs, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grouped.logprobs[::2], plain, atol=1e-5, rtol=1e-5)


def test_towers_router_and_projectors_run_once_per_prompt(policy, clip_samples):
    inner = policy.base_model.model
    calls = {"vision": 0, "audio": 0, "router": 0, "projector": 0}
    hooks = [
        module.register_forward_hook(lambda *_, key=key: calls.__setitem__(key, calls[key] + 1))
        for key, module in (("vision", inner.vision_tower), ("audio", inner.audio_tower),
                            ("router", inner.bert_model), ("projector", inner.mm_projector))
    ]  # fmt: skip
    try:
        with torch.no_grad():
            encoded = policy.encode_prompt(policy.collator("generate")(clip_samples[:2]))
            completion = policy.generate(encoded, group_size=3, share_prefix=False, max_new_tokens=4, do_sample=True)
            mask = torch.ones_like(completion)
            policy.score_completions(encoded, completion, mask, group_size=3)
            policy.token_logprobs(encoded.repeat_interleave(3), completion, mask)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == {"vision": 1, "audio": 1, "router": 1, "projector": 1}


def _mixed_length_batch(policy, samples, instructions):
    """A left-padded prompt batch whose rows have different instructions (so different lengths)."""
    singles = []
    for sample, text in zip(samples, instructions, strict=True):
        collator = policy.collator("generate")
        collator.instruction = text
        singles.append(collator([sample]))
    rows = [s["input_ids"][0][s["attention_mask"][0].bool()].tolist() for s in singles]
    ids, mask = pad_batch(rows, policy.tokenizer.pad_token_id, "left")
    router = policy.processor.router_tokenizer(instructions, padding=True, return_tensors="pt")
    batch = {
        "input_ids": ids, "attention_mask": mask, "prompts": dict(router),
        "images": torch.cat([s["images"] for s in singles]), "audios": torch.cat([s["audios"] for s in singles]),
    }  # fmt: skip
    return batch, singles


def test_left_padded_batched_generation_equals_one_prompt_at_a_time(policy, clip_samples):
    instructions = ["Which emotion?", "Which emotion does the person in this clip show most clearly, and why?"]
    batch, singles = _mixed_length_batch(policy, clip_samples[:2], instructions)
    assert batch["attention_mask"][0, 0] == 0  # row 0 is left-padded
    with torch.no_grad():
        together = policy.generate(policy.encode_prompt(batch), max_new_tokens=6, do_sample=False)
        alone = [policy.generate(policy.encode_prompt(s), max_new_tokens=6, do_sample=False) for s in singles]
    assert together.tolist() == [a[0].tolist() for a in alone]


def test_a_missing_audio_tensor_is_an_error_never_the_video_twice(policy, clip_samples):
    batch = policy.collator("train")(clip_samples[:1])
    no_audio = {k: v for k, v in batch.items() if k != "audios"}
    with pytest.raises(MediaTokenMismatchError, match="<audio> placeholder but no audio"):
        policy.encode_prompt(no_audio)
    with pytest.raises(MediaTokenMismatchError, match="<audio> placeholder but no audio"):
        policy.loss(no_audio)
    no_tag = dict(batch, input_ids=batch["input_ids"].masked_fill(batch["input_ids"] == -202, 5))
    with pytest.raises(MediaTokenMismatchError, match="no <audio> placeholder"):
        policy.encode_prompt(no_tag)
    with pytest.raises(MediaTokenMismatchError, match="router"):
        policy.encode_prompt({k: v for k, v in batch.items() if k != "prompts"})


def test_tiny_command_writes_a_loadable_humanomni_folder(tmp_path, capsys):
    assert tiny_command(tmp_path / "ho", kind="humanomni", hidden_size=32, num_layers=1) == 0
    assert "HumanOmni checkpoint" in capsys.readouterr().out
    assert load_pretrained(tmp_path / "ho").config.model_type == "HumanOmni_qwen2"
    with pytest.raises(ConfigError, match="--kind"):
        tiny_command(tmp_path / "x", kind="nope")


def test_8bit_quantises_the_language_model_only(tiny_ho, clip_samples):
    backbone = load_policy(_policy(tiny_ho, quantization="8bit", lora={"r": 4}))
    model = backbone.base_model
    assert type(model.get_submodule("model.layers.0.self_attn.q_proj").base_layer).__name__ == "Linear8bitLt"
    for name in (
        "model.mm_projector.readout_video.0", "model.mm_projector.mlp_2xgelu_face.0", "model.bert_gate.0",
        "model.audio_projector.0", "model.bert_model.encoder.layer.0.attention.self.query",
        "model.audio_tower.audio_tower.encoder.layers.0.fc1",
        "model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1", "lm_head",
    ):  # fmt: skip
        assert type(model.get_submodule(name)) is torch.nn.Linear, name
    loss, _ = backbone.loss(backbone.collator("train")(clip_samples[:1]))
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None for n, p in backbone.model.named_parameters() if "lora_" in n)


def test_group_sampling_from_one_prefill_equals_repeated_prompts(policy, clip_samples):
    encoded = policy.encode_prompt(policy.collator("generate")(clip_samples[:2]))
    with torch.no_grad():
        torch.manual_seed(5)
        grouped = policy.generate(encoded, group_size=3, max_new_tokens=5, do_sample=True)
        torch.manual_seed(5)
        repeated = policy.generate(encoded.repeat_interleave(3), max_new_tokens=5, do_sample=True)
    assert grouped.shape == (6, 5) and torch.equal(grouped, repeated)


def test_a_full_siglip_folder_serves_as_the_vision_tower(tiny_ho, tmp_path):
    """The public `google/siglip-*` folders hold text + vision: the vision half is taken, by its config."""
    from transformers import SiglipConfig, SiglipModel

    vision = json.loads((tiny_ho / "siglip" / "config.json").read_text())
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size")
    text = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    torch.manual_seed(3)
    full = SiglipModel(SiglipConfig(text_config=dict(text, vocab_size=64), vision_config={k: vision[k] for k in keys}))
    full.save_pretrained(tmp_path / "siglip_full")
    model = load_pretrained(tiny_ho, vision_tower=str(tmp_path / "siglip_full"))
    loaded = model.model.vision_tower.vision_tower.vision_model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in full.vision_model.state_dict().items())
    with pytest.raises(ConfigError, match="model_type"):
        load_pretrained(tiny_ho, vision_tower=str(tiny_ho / "bert"))  # a BERT folder is no vision tower


def test_backbone_options_reach_the_family_and_unknown_ones_are_refused() -> None:
    from ecr.errors import ConfigError
    from ecr.models import PolicyConfig
    from ecr.models.registry import build_backbone

    config = PolicyConfig(backbone="humanomni", model="x", backbone_options={"towers_from_checkpoint": True})
    assert PolicyConfig.from_dict(config.to_dict()).backbone_options == {"towers_from_checkpoint": True}
    build_backbone(config)  # accepted by the family's constructor
    with pytest.raises(ConfigError, match=r"backbone_options: 'humanomni' takes none of \['tower'\]"):
        build_backbone(PolicyConfig(backbone="humanomni", model="x", backbone_options={"tower": "a"}))
    with pytest.raises(ConfigError, match="backbone_options: 'causal_lm' takes none of"):
        build_backbone(PolicyConfig(backbone="causal_lm", model="x", backbone_options={"router": "b"}))


def test_slow_fast_compressor_pools_every_frame_and_keeps_every_fourth_frame_whole() -> None:
    from ecr.models.humanomni.projector import slow_fast_compress

    t, side, h = 6, 4, 3
    tokens = torch.arange(t * side * side * h, dtype=torch.float32).reshape(1, t * side * side, h)
    out = slow_fast_compress(tokens, t)  # [1, 6·2² + 2·16, 3]: fast for all 6 frames, slow for frames 1 and 5
    assert out.shape == (1, t * 4 + 2 * side * side, h)
    grid = tokens.reshape(t, side, side, h)
    assert torch.equal(out[0, 0], grid[0, :2, :2].mean((0, 1)))  # frame 0, top-left 2×2 block
    assert torch.equal(out[0, t * 4 :], torch.cat([grid[1], grid[5]]).reshape(-1, h))
    assert slow_fast_compress(torch.zeros(1, 32 * 196, 2), 32).shape[1] == 3136  # the spec's 7B figure
    assert slow_fast_compress(torch.zeros(1, 9, 2), 1).shape[1] == 1 + 9  # T = 1: frame 0 is the slow frame
    with pytest.raises(ConfigError, match="not a square grid"):
        slow_fast_compress(torch.zeros(1, 2 * 5, 2), 2)


def test_the_compressor_flag_changes_the_visual_token_count_only_when_on(policy, clip_samples):
    prompt = policy.collator("generate")(clip_samples[:1])
    config = policy.base_model.config
    assert config.slow_fast_compressor is False  # R1-Omni / ERV checkpoints: off
    plain = policy.encode_prompt(prompt).inputs_embeds.shape[1]
    config.slow_fast_compressor = True
    try:
        with torch.no_grad():
            compressed = policy.encode_prompt(prompt)
            ids = policy.generate(compressed, max_new_tokens=3, do_sample=False)
    finally:
        config.slow_fast_compressor = False
    assert plain - compressed.inputs_embeds.shape[1] == 32 - (8 * 1 + 2 * 4) and ids.shape == (1, 3)
