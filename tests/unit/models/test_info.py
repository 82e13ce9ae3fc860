"""`ecr model info`: the memory maths against hand calculations, the meta-device census against real counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ecr.errors import ConfigError
from ecr.fixtures.tiny_models import count_parameters
from ecr.models import load_policy
from ecr.models.config import LoraSettings, PolicyConfig
from ecr.models.info import (
    Memory,
    ModelSource,
    build_skeleton,
    info_command,
    int8_weight_bytes,
    lora_formula,
    model_census,
    nf4_weight_bytes,
    optimizer_bytes,
    per_gpu,
)

INFO = "ecr.models.info:info_command"


def test_quantised_weight_bytes_by_hand() -> None:
    assert int8_weight_bytes(1000, rows=10) == 1000 + 40  # int8 values + fp32 scale per row
    n = 64 * 256 * 3  # 768 blocks of 64, 3 nested blocks of 256
    assert nf4_weight_bytes(n) == n // 2 + 768 + 3 * 4 + 4
    assert nf4_weight_bytes(65) == 33 + 2 + 4 + 4  # partial blocks round up


def test_optimizer_and_sharding_by_hand() -> None:
    assert optimizer_bytes(10, param_bytes=4) == 80  # fp32 LoRA: m + v
    assert optimizer_bytes(10, param_bytes=2) == 120  # bf16 full fine-tune: m + v + fp32 master
    mem = Memory(weights=800, gradients=80, optimizer=160)
    assert per_gpu(mem, 8, 0) == mem
    assert per_gpu(mem, 8, 2) == Memory(800, 10, 20)
    assert per_gpu(mem, 8, 3) == Memory(100, 10, 20)
    with pytest.raises(ConfigError, match="--gpus"):
        per_gpu(mem, 0, 2)


def test_census_of_a_folder_counts_what_its_safetensors_hold(tiny_omni: Path) -> None:
    census = model_census(str(tiny_omni), dtype="float32", lora=LoraSettings(r=4))
    assert census.parameters == count_parameters(tiny_omni)
    names = [p.name for p in census.parts]
    assert names == ["vision tower", "vision projector", "audio tower", "audio projector", "language model", "LM head"]
    assert not census.tied_head
    lora_bytes = census.trainable * 4
    assert census.memory.weights == census.parameters * 4 + lora_bytes


def test_lora_count_is_peft_on_meta_equals_the_formula_and_ecrs_own_loading(tiny_omni: Path) -> None:
    """peft applied to the meta skeleton = r·(in+out) per targeted Linear = what `load_policy` trains."""
    from ecr.models.info import model_source

    lora = LoraSettings(r=4)
    census = model_census(str(tiny_omni), dtype="float32", lora=lora)
    formula = lora_formula(build_skeleton(model_source(str(tiny_omni))), census.lora_targets, r=4)
    assert census.trainable == formula > 0
    policy = load_policy(PolicyConfig(model=str(tiny_omni), lora=lora))
    assert census.trainable == sum(p.numel() for p in policy.model.parameters() if p.requires_grad)
    assert [p.name for p in census.parts if p.trainable] == ["language model"]  # never the towers


def test_modules_to_save_are_trained_copies_as_ecr_loads_them(tiny_omni: Path) -> None:
    lora = LoraSettings(r=4, modules_to_save=["merger"])
    census = model_census(str(tiny_omni), dtype="float32", lora=lora)
    policy = load_policy(PolicyConfig(model=str(tiny_omni), lora=lora))
    assert census.trainable == sum(p.numel() for p in policy.model.parameters() if p.requires_grad)
    merger = {p.name: p for p in census.parts}["vision projector"]
    assert merger.trainable == merger.parameters > 0 and merger.weight_bytes == 2 * 4 * merger.parameters


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantised_weight_bytes_equal_what_bitsandbytes_stores(tiny_omni: Path, quantization: str) -> None:
    """The census of a quantised LoRA policy = the bytes of the loaded policy's tensors (CPU: 4-bit loads for
    inference there): parameters + int8 row scales, or NF4 absmax, nested absmax and offset."""
    lora = LoraSettings(r=4)
    policy = load_policy(PolicyConfig(model=str(tiny_omni), dtype="bfloat16", quantization=quantization, lora=lora))
    stored, seen = 0, set()
    for param in policy.model.parameters():
        stored += param.numel() * param.element_size()
        if id(param) in seen:
            continue
        seen.add(id(param))
        state = getattr(param, "quant_state", None)
        extra = [getattr(param, "SCB", None)]
        if state is not None:
            extra += [state.absmax, state.offset, state.state2.absmax if state.state2 is not None else None]
        stored += sum(t.numel() * t.element_size() for t in extra if t is not None)
    census = model_census(str(tiny_omni), quantization=quantization, dtype="bfloat16", lora=lora)
    assert sum(p.quantized for p in census.parts) > 0
    assert census.memory.weights == stored


def test_tied_head_is_counted_once(tiny_omni: Path) -> None:
    config = json.loads((tiny_omni / "config.json").read_text())
    untied = model_census(ModelSource("qwen2_5_omni", config, "untied"), lora=LoraSettings(r=2))
    tied = model_census(ModelSource("qwen2_5_omni", {**config, "tie_word_embeddings": True}, "tied"))
    text = config["text_config"]
    assert tied.tied_head and not untied.tied_head
    assert untied.parameters - tied.parameters == text["vocab_size"] * text["hidden_size"]
    assert "LM head" not in [p.name for p in tied.parts]


def test_full_fine_tune_trains_language_model_and_head_only(tiny_omni: Path) -> None:
    census = model_census(str(tiny_omni), dtype="bfloat16", lora=LoraSettings(enabled=False))
    trained = {p.name: p.trainable for p in census.parts}
    assert trained["vision tower"] == trained["audio tower"] == 0
    lm = sum(p.parameters for p in census.parts if p.name in ("language model", "LM head"))
    assert census.trainable == lm
    assert census.memory.gradients == 2 * lm and census.memory.optimizer == 12 * lm  # bf16: m, v, fp32 master
    with pytest.raises(ConfigError, match="lora.enabled"):
        model_census(str(tiny_omni), quantization="8bit", lora=LoraSettings(enabled=False))


def test_qwen_omni_7b_preset_by_hand() -> None:
    """Qwen2.5-7B language model: 28 layers, hidden 3584, MLP 18944, 4 KV heads of 128, vocabulary 152064."""
    census = model_census("qwen2.5-omni-7b", quantization="8bit", dtype="bfloat16", lora=LoraSettings(r=16))
    parts = {p.name: p for p in census.parts}
    h, f, kv, layers, vocab = 3584, 18944, 512, 28, 152064
    linear = layers * (h * h + 2 * kv * h + h * h + 3 * h * f)
    rows = layers * (h + 2 * kv + h + 2 * f + h)
    biases, norms = layers * (h + 2 * kv), layers * 2 * h + h
    lm = parts["language model"]
    assert lm.parameters == linear + biases + norms + vocab * h == 7_070_619_136
    assert lm.quantized == linear
    lora = layers * 16 * ((h + h) + 2 * (h + kv) + (h + h) + 3 * (h + f))
    assert census.trainable == lm.trainable == lora == 40_370_176
    assert lm.weight_bytes == linear + 4 * rows + 2 * (lm.parameters - linear) + 4 * lora
    assert parts["LM head"].parameters == vocab * h and parts["LM head"].quantized == 0  # head stays bf16
    assert parts["vision tower"].quantized == parts["audio tower"].quantized == 0
    assert census.parameters == 8_931_813_888
    assert census.memory.gradients == 4 * lora and census.memory.optimizer == 8 * lora


@pytest.mark.slow
def test_qwen_omni_3b_preset_builds() -> None:
    census = model_census("qwen2.5-omni-3b", lora=LoraSettings(r=16))
    assert 4.5e9 < census.parameters < 5.0e9 and not census.tied_head


def test_humanomni_05b_preset_matches_the_spec_census() -> None:
    census = model_census("humanomni-0.5b", lora=LoraSettings(r=16))
    assert census.parameters == 1_373_177_925  # humanomni_spec.md §2.4, the 2.75 GB R1-Omni-0.5B file
    assert census.tied_head


def test_unknown_preset_or_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a preset"):
        model_census("qwen2.5-omni-1b")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="model_type 'bert'"):
        model_census(str(tmp_path))


def test_info_command_prints_parts_memory_and_the_activation_caveat(tiny_omni: Path, capsys) -> None:
    assert info_command(str(tiny_omni), quantization="8bit", lora=LoraSettings(r=4), gpus=4) == 0
    out = capsys.readouterr().out
    for text in ("vision tower", "language model", "ZeRO-2", "ZeRO-3", "needs --quantization none", "NOT included"):
        assert text in out


def test_cli_model_info_with_dotted_lora_option(tiny_omni: Path, monkeypatch, capsys) -> None:
    """`ecr model info --model DIR --lora.r 4` through `ecr.cli.main`, as registered in EXTRA_COMMANDS."""
    import ecr.cli

    assert ecr.cli.EXTRA_COMMANDS["model"]["info"] == INFO
    with pytest.raises(SystemExit) as done:
        ecr.cli.main(["model", "info", "--model", str(tiny_omni), "--lora.r", "4", "--gpus", "2"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "LoRA r=4" in out and "| 2    | ZeRO-3" in out
    with pytest.raises(SystemExit) as bad:
        ecr.cli.main(["model", "info", "--model", "no-such-preset"])
    err = capsys.readouterr().err
    assert bad.value.code == 2 and "no-such-preset" in err and "Traceback" not in err


@pytest.mark.slow
def test_cli_model_info_in_a_subprocess(tiny_omni: Path) -> None:
    code = "import ecr.cli as c, sys; c.main(sys.argv[1:])"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    args = [sys.executable, "-c", code, "model", "info", "--model", str(tiny_omni), "--quantization", "4bit"]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "quantization 4bit" in done.stdout and "NOT included" in done.stdout
