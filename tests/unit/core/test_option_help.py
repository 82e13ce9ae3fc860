"""Every option a config can set has a help line: `ecr fit --help`, `ecr label --help`, … document nothing blank.

Each `ecr` class a shipped config (or `--help`) can name — LightningModules, DataModules, callbacks, the
teacher settings — is added to a jsonargparse parser with the settings the `ecr` CLI uses
(`ecr.cli.configure_parsing`), and every resulting option must carry a non-empty help text (from the
`Args:` section of a docstring or a dataclass field's docstring).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from jsonargparse import ArgumentParser

from ecr.cli import EXTRA_COMMANDS, cli_main, configure_parsing

ROOT = Path(__file__).resolve().parents[3]
CLASSES = {
    "ecr.modules.sft.SFTModule",
    "ecr.modules.erv.ERVModule",
    "ecr.modules.erv.ExportVerifier",
    "ecr.modules.grpo.GRPOModule",
    "ecr.modules.predict.PredictModule",
    "ecr.evaluation.PredictionWriter",
    "ecr.callbacks.GenerationSampleLogger",
    "ecr.callbacks.TokenThroughputMonitor",
    "ecr.data.ClipDataModule",
    "ecr.data.TextDataModule",
    "ecr.data.sentences.SentenceDataModule",
    "ecr.teachers.openai_chat.OpenAIConfig",
}


def _load(target: str) -> object:
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


def undocumented(component: object, *, function: bool = False) -> list[str]:
    configure_parsing()
    parser = ArgumentParser()
    if function:
        parser.add_function_arguments(component, "x")  # type: ignore[arg-type]
    else:
        parser.add_class_arguments(component, "x")  # type: ignore[arg-type]
    skip = {"help", "config", "x"}
    return [a.dest for a in parser._actions if a.dest not in skip and not a.dest.endswith(".help") and not a.help]


def test_every_ecr_class_named_by_a_shipped_config_is_covered() -> None:
    named = set()
    for path in (ROOT / "configs").rglob("*.yaml"):
        named |= set(re.findall(r"class_path:\s*(ecr\.[\w.]+)", path.read_text()))
    assert named <= CLASSES, f"add these to CLASSES: {sorted(named - CLASSES)}"


@pytest.mark.parametrize("target", sorted(CLASSES))
def test_every_constructor_option_has_help(target: str) -> None:
    assert undocumented(_load(target)) == []


@pytest.mark.parametrize(
    "target",
    sorted(t for spec in EXTRA_COMMANDS.values() for t in ([spec] if isinstance(spec, str) else spec.values())),
)
def test_every_utility_command_option_has_help(target: str) -> None:
    module, _, name = target.partition(":")
    assert undocumented(getattr(importlib.import_module(module), name), function=True) == []


def test_nested_dataclass_fields_reach_the_rendered_help(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    """`ecr fit --model.help ecr.modules.sft.SFTModule` shows the policy's field docstrings (e.g. LoRA rank)."""
    monkeypatch.setattr("sys.argv", ["ecr"])
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--model.help", "ecr.modules.sft.SFTModule"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--model.policy.lora.r" in out and "Adapter rank." in out
    assert "Peak learning rate of the default AdamW" in out
