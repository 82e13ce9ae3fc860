"""Every shipped YAML under configs/ (recursively) parses and instantiates its classes.

Stage configs (with a `model:` section) are loaded alone; partial configs (strategy/data snippets) are
stacked onto the demo SFT config, the way users stack them. Instantiation must stay cheap: heavy model
loading belongs in `configure_model()`, so nothing here touches weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ecr.cli import cli_main

ROOT = Path(__file__).resolve().parents[3]
PIPELINES = {ROOT / "configs" / "demo" / "pipeline.yaml"}  # `ecr pipeline` files: loaded in test_pipeline.py
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p not in PIPELINES)
BASE = ROOT / "configs" / "demo" / "sft.yaml"
# overlays that stack onto another stage's config (their header comment says which)
BASES = {
    "demo/explain.yaml": ROOT / "configs" / "demo" / "predict.yaml",
    "demo/predict_grpo.yaml": ROOT / "configs" / "demo" / "predict.yaml",
    # HumanOmni keeps its SigLIP tower frozen; the demo SFT trains the tiny model's towers, the main SFT config does not
    "recipes/r1-omni-0.5b.yaml": ROOT / "configs" / "sft.yaml",
}


def test_configs_exist() -> None:
    names = {p.relative_to(ROOT / "configs").as_posix() for p in CONFIGS}
    assert {"sft.yaml", "erv.yaml", "demo/sft.yaml", "demo/erv.yaml"} <= names


def _stand_in_checkpoint(tmp_path: Path) -> Path:
    """A policy-stage checkpoint as `ecr.modules.checkpointing.read_checkpoint` reads it (policy config + tensors)."""
    import torch

    from ecr.models import PolicyConfig

    path = tmp_path / "last.ckpt"
    policy = PolicyConfig(model="runs/demo_sft/export/merged", lora={"enabled": True, "r": 8}).to_dict()
    torch.save({"hyper_parameters": {"policy": policy}, "state_dict": {"model.w": torch.zeros(1)}}, path)
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(ROOT / "configs").as_posix())
def test_config_instantiates(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("sys.argv", ["ecr"])  # LightningCLI warns when pytest's own argv is present
    content = yaml.safe_load(path.read_text()) or {}
    standalone = "class_path" in (content.get("model") or {})
    base = BASES.get(path.relative_to(ROOT / "configs").as_posix(), BASE)
    args = ["--config", str(path)] if standalone else ["--config", str(base), "--config", str(path)]
    checkpoint = ((content.get("model") or {}).get("init_args") or {}).get("checkpoint")
    if checkpoint and not (ROOT / checkpoint).is_file():  # an earlier stage's output: a stand-in of its format
        args += ["--model.init_args.checkpoint", str(_stand_in_checkpoint(tmp_path))]
    cli = cli_main(args, run=False)
    assert cli.model is not None and cli.trainer is not None
    if "data" in content:
        assert cli.datamodule is not None
    strategy = (content.get("trainer") or {}).get("strategy")
    if isinstance(strategy, dict):
        assert type(cli.trainer.strategy).__name__ == strategy["class_path"].rsplit(".", 1)[-1]


@pytest.mark.parametrize("strategy", sorted((ROOT / "configs" / "deepspeed").glob("*.yaml")), ids=lambda p: p.stem)
def test_deepspeed_configs_stack_onto_grpo(strategy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GRPO stage takes the same strategy snippets as SFT (ZeRO-3: unquantised LoRA)."""
    monkeypatch.setattr("sys.argv", ["ecr"])
    cli = cli_main(["--config", str(ROOT / "configs" / "grpo.yaml"), "--config", str(strategy)], run=False)
    assert type(cli.trainer.strategy).__name__ == "DeepSpeedStrategy"
    expected = (yaml.safe_load(strategy.read_text()).get("model") or {}).get("init_args", {}).get("policy", {})
    for key, value in expected.items():
        assert getattr(cli.model.policy_config, key) == value
