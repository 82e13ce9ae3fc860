"""Backbones: offline loading, freezing, LoRA placement, quantisation, encode-once scoring, adapters."""

from __future__ import annotations

import os

import pytest
import torch

from ecr.errors import ConfigError
from ecr.hub import resolve_pretrained
from ecr.models import PolicyBackbone, PolicyConfig, build_backbone, load_policy
from ecr.models.hf import model_inputs

SMALL = {"min_pixels": 3136, "max_pixels": 3136}


def _policy(path, **kw) -> PolicyConfig:
    kw.setdefault("inputs", SMALL)
    return PolicyConfig(model=str(path), **kw)


def _plain_logprobs(bb, gen_batch, completion):
    """Log-probs of `completion` from one ordinary forward over prompt + completion (media re-encoded), under
    the distribution sampling draws from (media placeholder ids suppressed)."""
    inputs = model_inputs(gen_batch)
    inputs["input_ids"] = torch.cat([gen_batch["input_ids"], completion], 1)
    inputs["attention_mask"] = torch.cat([gen_batch["attention_mask"], torch.ones_like(completion)], 1)
    logits = bb.model(**inputs).logits[:, gen_batch["input_ids"].shape[1] - 1 : -1]
    return bb.sampling_distribution().log_probs(logits).gather(-1, completion[..., None])[..., 0]


# ------------------------------------------------------------------------------------------------ loading
def test_missing_hub_model_fails_fast_with_an_ecr_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache"):
        resolve_pretrained("Qwen/Qwen2.5-Omni-3B")
    with pytest.raises(ConfigError, match="neither an existing folder"):
        resolve_pretrained(str(tmp_path / "nope" / "deeper"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_pretrained(str(tmp_path / "empty"))


def test_hub_id_resolves_from_the_local_cache(tiny_omni, tmp_path, monkeypatch):
    """A model id found in the HF cache layout resolves without network (snapshot_download, offline)."""
    import huggingface_hub.constants as c

    cache = tmp_path / "hub"
    snap = cache / "models--acme--tiny-omni" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for f in tiny_omni.iterdir():
        (snap / f.name).symlink_to(f)
    (cache / "models--acme--tiny-omni" / "refs").mkdir()
    (cache / "models--acme--tiny-omni" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    assert resolve_pretrained("acme/tiny-omni") == snap
    bb = load_policy(_policy("acme/tiny-omni", lora={"enabled": False}))
    assert type(bb.base_model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"


def test_unknown_backbone_and_bad_combinations_are_config_errors(tiny_omni):
    with pytest.raises(ConfigError, match="unknown backbone 'nope'"):
        build_backbone(_policy(tiny_omni, backbone="nope"))
    with pytest.raises(ConfigError, match="needs policy.lora.enabled"):
        _policy(tiny_omni, quantization="8bit", lora={"enabled": False})
    with pytest.raises(ConfigError, match="unknown field"):
        PolicyConfig.from_dict({"model": "x", "lora_rank": 8})
    assert PolicyConfig.from_dict(_policy(tiny_omni).to_dict()) == _policy(tiny_omni)


def test_lora_targets_language_model_only_and_towers_frozen(tiny_omni):
    bb = load_policy(_policy(tiny_omni, lora={"r": 4, "alpha": 8}))
    assert isinstance(bb, PolicyBackbone)
    assert bb.load() is bb.model  # idempotent
    lora = [n for n, _ in bb.model.named_parameters() if "lora_" in n]
    assert lora and all(".language_model.layers." in n for n in lora)
    assert {n.split(".")[-4] for n in lora} == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    trainable = bb.trainable_parameter_names()
    assert set(trainable) == set(lora)
    base = bb.base_model
    assert not any(p.requires_grad for p in base.model.visual.parameters())
    assert not any(p.requires_grad for p in base.model.audio_tower.parameters())


def test_full_finetune_freezes_towers_unless_told(tiny_omni):
    bb = load_policy(_policy(tiny_omni, lora={"enabled": False}, freeze_audio=False))
    m = bb.base_model.model
    assert not any(p.requires_grad for p in m.visual.parameters())
    assert all(p.requires_grad for p in m.audio_tower.parameters())
    assert all(p.requires_grad for p in m.language_model.parameters())
    # with LoRA, an unfrozen tower is trained fully next to the adapters (peft modules_to_save)
    bb = load_policy(_policy(tiny_omni, freeze_vision=False))
    assert any(p.requires_grad and "visual" in n for n, p in bb.model.named_parameters())


def test_8bit_quantises_the_language_model_only(tiny_omni, clip_samples):
    import bitsandbytes as bnb

    bb = load_policy(_policy(tiny_omni, quantization="8bit", lora={"r": 4}))
    base = bb.base_model
    q = base.model.language_model.layers[0].self_attn.q_proj
    assert isinstance(q.base_layer, bnb.nn.Linear8bitLt)
    assert not any(isinstance(m, bnb.nn.Linear8bitLt) for m in base.model.visual.modules())
    assert not any(isinstance(m, bnb.nn.Linear8bitLt) for m in base.model.audio_tower.modules())
    assert not isinstance(base.lm_head, bnb.nn.Linear8bitLt)
    loss, n = bb.loss(bb.collator("train")(clip_samples[:2]))
    assert torch.isfinite(loss) and n > 0


def test_4bit_loads_and_runs_inference_on_cpu(tiny_omni, clip_samples):
    """QLoRA weights: CPU bitsandbytes supports 4-bit inference only (training is tested in tests/gpu)."""
    import bitsandbytes as bnb

    bb = load_policy(_policy(tiny_omni, quantization="4bit", dtype="float32", lora={"r": 4}))
    assert isinstance(bb.base_model.model.language_model.layers[0].mlp.up_proj.base_layer, bnb.nn.Linear4bit)
    with torch.no_grad():
        ids = bb.generate(
            bb.encode_prompt(bb.collator("generate")(clip_samples[:1])), max_new_tokens=3, do_sample=False
        )
    assert ids.shape == (1, 3)


# -------------------------------------------------------------------------------------- encode once
@pytest.mark.parametrize("audio_in_video", [True, False], ids=["interleaved", "sequential"])
@pytest.mark.parametrize("quantization", ["none", "8bit"])
def test_cached_prompt_logprobs_equal_plain_forward(
    tiny_omni, clip_samples, long_clip_samples, quantization, audio_in_video
):
    torch.manual_seed(0)
    inputs = {**SMALL, "audio_in_video": audio_in_video}
    bb = load_policy(_policy(tiny_omni, quantization=quantization, lora={"r": 4, "dropout": 0.0}, inputs=inputs))
    for p in bb.model.parameters():  # non-zero adapters so LoRA takes part in both paths
        if "lora_B" in str(p.shape) or p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    bb.model.eval()
    samples = [clip_samples[0], long_clip_samples[0], long_clip_samples[2]]  # 2 s, 5 s, 3 s -> left padding
    batch = bb.collator("generate")(samples)
    assert batch["use_audio_in_video"] is audio_in_video  # the plain forward / HF generate read the flag
    with torch.no_grad():
        prompt = bb.encode_prompt(batch)
        completion = bb.generate(prompt, max_new_tokens=5, do_sample=False)
        mask = torch.ones_like(completion)
        cached = bb.token_logprobs(prompt, completion, mask)
        plain = _plain_logprobs(bb, batch, completion)
        assert torch.allclose(cached, plain, atol=1e-5)
        # generation from the cached encoding equals generation from raw media
        raw = bb.model.generate(**model_inputs(batch), max_new_tokens=5, do_sample=False)
        assert torch.equal(raw[:, batch["input_ids"].shape[1] :], completion)
        # G rollouts per prompt reuse the encoding: same scores, repeated
        g = prompt.repeat_interleave(2)
        assert torch.allclose(
            bb.token_logprobs(g, completion.repeat_interleave(2, 0), mask.repeat_interleave(2, 0)),
            cached.repeat_interleave(2, 0),
            atol=1e-5,
        )


def test_token_logprobs_backpropagate_into_adapters_only(tiny_omni, clip_samples):
    bb = load_policy(_policy(tiny_omni, lora={"r": 4}))
    batch = bb.collator("generate")(clip_samples[:2])
    with torch.no_grad():
        prompt = bb.encode_prompt(batch).detach()
    completion = torch.randint(11, 100, (2, 4))
    lp = bb.token_logprobs(prompt, completion, torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]))
    assert lp[0, 3] == 0
    lp.sum().backward()
    grads = {n for n, p in bb.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and all("lora_" in n for n in grads)


def test_reference_logprobs_with_the_adapter_disabled(tiny_omni, clip_samples):
    """GRPO's reference policy = the same model with LoRA switched off (no second copy)."""
    bb = load_policy(_policy(tiny_omni, lora={"r": 4, "dropout": 0.0}))
    plain = load_policy(_policy(tiny_omni, lora={"enabled": False}))
    for n, p in bb.model.named_parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    bb.model.eval()
    plain.model.eval()
    with torch.no_grad():
        prompt = bb.encode_prompt(bb.collator("generate")(clip_samples[:2]))
        completion = torch.randint(11, 100, (2, 5))
        mask = torch.ones_like(completion)
        policy_lp = bb.token_logprobs(prompt, completion, mask)
        with bb.adapter_disabled():
            ref_lp = bb.token_logprobs(prompt, completion, mask)
        base_lp = plain.token_logprobs(
            plain.encode_prompt(plain.collator("generate")(clip_samples[:2])), completion, mask
        )
    assert torch.allclose(ref_lp, base_lp, atol=1e-5)
    assert not torch.allclose(policy_lp, ref_lp, atol=1e-3)
    with pytest.raises(ConfigError, match="needs a LoRA policy"), plain.adapter_disabled():
        pass


def test_adapter_save_then_load_gives_identical_logits(tiny_omni, clip_samples, tmp_path):
    bb = load_policy(_policy(tiny_omni, quantization="8bit", lora={"r": 4, "dropout": 0.0}))
    for n, p in bb.model.named_parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    bb.model.eval()
    batch = bb.collator("train")(clip_samples[:2])
    with torch.no_grad():
        before = bb.model(**model_inputs(batch)).logits
    bb.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    again = load_policy(_policy(tiny_omni, quantization="8bit", adapter=str(tmp_path / "adapter")))
    again.model.eval()
    with torch.no_grad():
        after = again.model(**model_inputs(batch)).logits
    assert torch.equal(before, after)
    assert sorted(again.trainable_parameter_names()) == sorted(bb.trainable_parameter_names())


# ------------------------------------------------------------------------------------------ text LMs
def test_causal_lm_backbone_trains_and_scores_text(tiny_lm, text_samples):
    bb = load_policy(PolicyConfig(backbone="causal_lm", model=str(tiny_lm), lora={"r": 4, "dropout": 0.0}))
    assert {n.split(".")[-4] for n, _ in bb.model.named_parameters() if "lora_A" in n} >= {
        "q_proj",
        "down_proj",
    }
    assert not any("lm_head" in n and "lora" in n for n, _ in bb.model.named_parameters())
    samples = text_samples
    batch = bb.collator("train")(samples)
    kept = batch["labels"][1][batch["labels"][1] != -100]
    assert (
        bb.tokenizer.decode(kept) == "<think>The words are curt and hostile.</think>\n<answer>angry</answer><|im_end|>"
    )
    loss, _ = bb.loss(batch)
    loss.backward()
    bb.model.eval()
    gen = bb.collator("generate")(samples)
    with torch.no_grad():
        prompt = bb.encode_prompt(gen)
        completion = bb.generate(prompt, max_new_tokens=4, do_sample=False)
        cached = bb.token_logprobs(prompt, completion, torch.ones_like(completion))
        plain = _plain_logprobs(bb, gen, completion)
    assert torch.allclose(cached, plain, atol=1e-5)


def test_env_is_offline():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
