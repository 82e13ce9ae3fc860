"""Every recipe of configs/recipes/ (model x data x stage x one GPU | multi-node) loads through the real CLI parser,
resolves to the intended strategy, quantisation, LoRA and global batch, and names data and models by relative
placeholder paths only (no machine paths). The argument lists are those of configs/recipes/README.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecr.cli import cli_main

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "configs"
RECIPES = CONFIGS / "recipes"
MODELS = ("qwen2.5-omni-3b", "qwen2.5-omni-7b", "r1-omni-0.5b")
DATASETS = ("dfew", "mafw")
MODEL_FOLDERS = {
    "qwen2.5-omni-3b": "models/Qwen2.5-Omni-3B",
    "qwen2.5-omni-7b": "models/Qwen2.5-Omni-7B",
    "r1-omni-0.5b": "models/R1-Omni-0.5B",
}
INFO_PRESETS = {
    "qwen2.5-omni-3b": "qwen2.5-omni-3b",
    "qwen2.5-omni-7b": "qwen2.5-omni-7b",
    "r1-omni-0.5b": "humanomni-0.5b",
}
MULTI_SFT = ["--data.init_args.batch_size", "2", "--trainer.accumulate_grad_batches", "1"]
MULTI_GRPO = ["--data.init_args.batch_size", "1", "--model.init_args.grpo.gradient_accumulation_steps", "1"]
# Machine-specific path shapes: absolute POSIX or Windows paths, home folders, cluster mounts.
MACHINE_PATH = re.compile(r"^(/|~|[A-Za-z]:[\\/])|(^|/)(home|mnt|Users|scratch)/")


def _c(*names: str) -> list[str]:
    return [arg for name in names for arg in ("--config", str(CONFIGS / name))]


def recipes() -> dict[str, tuple[list[str], dict[str, Any]]]:
    """recipe id -> (CLI arguments, what it must resolve to)."""
    out: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for model in MODELS:
        base = _c("sft.yaml", "recipes/sft.yaml", f"recipes/{model}.yaml")
        out[f"sft-{model}-one_gpu"] = (
            base + _c("recipes/one_gpu.yaml"),
            {"strategy": None, "quantization": "8bit", "nodes_x_devices": 1, "global": 32, "model": model},
        )
        out[f"sft-{model}-multi_node"] = (
            base + _c("deepspeed/zero3.yaml", "recipes/multi_node.yaml") + MULTI_SFT,
            {"strategy": 3, "quantization": "none", "nodes_x_devices": 16, "global": 32, "model": model},
        )
    for data in DATASETS:
        grpo = _c("grpo.yaml", f"recipes/{data}.yaml")
        out[f"grpo-{data}-one_gpu"] = (
            grpo + _c("recipes/one_gpu.yaml"),
            {"strategy": None, "quantization": "8bit", "nodes_x_devices": 1, "global": 16, "data": data},
        )
        out[f"grpo-{data}-multi_node"] = (
            grpo + _c("deepspeed/zero3.yaml", "recipes/multi_node.yaml") + MULTI_GRPO,
            {"strategy": 3, "quantization": "none", "nodes_x_devices": 16, "global": 16, "data": data},
        )
        out[f"explain-{data}"] = (  # the SFT policy's own explanations on training clips (the ERV data)
            _c("predict.yaml", f"recipes/{data}.yaml")
            + ["--model.init_args.policy.model", "runs/sft/export/merged", "--model.init_args.verifier", "null"]
            + ["--data.init_args.predict_split", "train"],
            {"data": data},
        )
        out[f"erv-{data}"] = (_c("erv.yaml") + ["--model.init_args.task", data], {"task": data})
        out[f"grpo-{data}-r1-omni-0.5b-one_gpu"] = (  # the paper's exact setting: R1-Omni-0.5B -> SFT -> GRPO
            grpo
            + _c("recipes/r1-omni-0.5b.yaml", "recipes/one_gpu.yaml")
            + ["--model.init_args.policy.model", "runs/sft/export/merged"],
            {"strategy": None, "quantization": "8bit", "nodes_x_devices": 1, "global": 16, "data": data},
        )
    return out


RECIPE_IDS = sorted(recipes())


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


@pytest.mark.parametrize("recipe", RECIPE_IDS)
def test_recipe_resolves_as_intended(recipe: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["ecr"])
    args, want = recipes()[recipe]
    cli = cli_main(args, run=False)
    trainer, init = cli.trainer, cli.config["model"]["init_args"]
    if "task" in want:
        assert init["task"] == want["task"] and init["student"] == "roberta-base"
        return
    policy = cli.model.policy_config
    data = cli.datamodule.hparams
    if "data" in want:
        assert data["format"] == want["data"] and data["root"] == f"data/{want['data'].upper()}"
    if "model" in want:
        assert policy.model == MODEL_FOLDERS[want["model"]]
    if "r1-omni" in recipe:
        assert policy.backbone == "humanomni" and set(policy.backbone_options) == {
            "vision_tower",
            "audio_tower",
            "router",
        }
    if "quantization" not in want:  # the explanation pass: the merged SFT policy, plain bf16
        assert policy.model == "runs/sft/export/merged" and data["predict_split"] == "train"
        return
    assert policy.quantization == want["quantization"]
    assert policy.lora.enabled and policy.lora.r == 16 and policy.dtype == "bfloat16"
    strategy = type(trainer.strategy).__name__
    if want["strategy"] is None:
        assert strategy != "DeepSpeedStrategy"
    else:
        assert strategy == "DeepSpeedStrategy" and trainer.strategy.config["zero_optimization"]["stage"] == 3
    assert trainer.num_nodes * trainer.num_devices == want["nodes_x_devices"]
    accumulation = (init.get("grpo") or {}).get("gradient_accumulation_steps") or trainer.accumulate_grad_batches
    assert want["nodes_x_devices"] * data["batch_size"] * accumulation == want["global"]


@pytest.mark.parametrize("recipe", RECIPE_IDS)
def test_recipe_paths_are_parameters_not_machine_paths(recipe: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["ecr"])
    args, _ = recipes()[recipe]
    config = cli_main(args, run=False).config.as_dict()
    config.pop("config", None)  # the --config file names themselves
    config["trainer"].pop("strategy", None)  # DeepSpeed's own defaults (nvme_path=/local_nvme); ours: YAML test
    bad = [s for s in _strings(config) if MACHINE_PATH.search(s)]
    assert bad == []


def test_every_recipe_file_is_used_and_relative() -> None:
    files = {p.name for p in RECIPES.glob("*.yaml")}
    used = {Path(a).name for args, _ in recipes().values() for a in args if a.startswith(str(RECIPES))}
    assert files == used
    for path in RECIPES.glob("*.yaml"):
        bad = [s for s in _strings(yaml.safe_load(path.read_text())) if MACHINE_PATH.search(s)]
        assert bad == [], path.name


def test_readme_lists_every_recipe_file_and_the_memory_of_each_model() -> None:
    readme = (RECIPES / "README.md").read_text()
    for path in RECIPES.glob("*.yaml"):
        assert f"configs/recipes/{path.name}" in readme
    for model in MODELS:
        assert f"ecr model info --model {INFO_PRESETS[model]}" in readme
    assert "Activations are not included" in readme
