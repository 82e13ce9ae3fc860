"""The collator is handed to the DataModule where the pair is built (`ecr.modules.wiring.connect`, called by the
CLI once it has instantiated both), not by the module mutating the DataModule in its `setup()`."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from ecr.cli import cli_main
from ecr.data import TextDataModule
from ecr.errors import ConfigError
from ecr.fixtures import synthesize, write_text_manifest
from ecr.fixtures.tiny_models import build_tiny_causal_lm
from ecr.models import PolicyConfig
from ecr.modules.grpo import GRPOModule
from ecr.modules.sft import SFTModule
from ecr.modules.wiring import connect

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("lm"), hidden_size=32, num_layers=1)


@pytest.fixture(scope="module")
def text_rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    manifest = synthesize(tmp_path_factory.mktemp("synth"), num_clips=3, labels="dfew", size=16, duration=0.3)
    return write_text_manifest(manifest)


def test_the_cli_pairs_the_stage_collator_with_its_datamodule(tiny_lm: Path, text_rows: Path) -> None:
    """Built from a config (nothing fitted, no `setup()` run), the DataModule already collates for the stage."""
    args = ["--config", str(CONFIGS / "demo/sft_text.yaml"), "--trainer.logger", "false",
            "--model.init_args.policy.model", str(tiny_lm), "--data.init_args.manifest", str(text_rows)]  # fmt: skip
    cli = cli_main(args, run=False)
    assert cli.datamodule.collate_fn is cli.model.collator and cli.datamodule.collate_fn.mode == "train"
    samples = [{"id": "a", "text": "I am fine.", "label": "happy", "explanation": "Calm."}]
    batch = cli.datamodule.collate_fn(samples)
    assert (batch["labels"] != -100).any()  # prompt + target: the SFT batch, collated by the policy's tokenizer
    sent = pickle.loads(pickle.dumps(cli.datamodule.collate_fn))  # what a DataLoader worker gets: no backbone
    assert sent._backbone is None and sent(samples)["input_ids"].equal(batch["input_ids"])


def test_connect_from_python_gives_each_stage_its_batches(tiny_lm: Path, text_rows: Path) -> None:
    policy = PolicyConfig(backbone="causal_lm", model=str(tiny_lm), lora={"enabled": False})
    for module, mode in ((SFTModule(policy), "train"), (GRPOModule(policy), "generate")):
        dm = TextDataModule(text_rows, labels="dfew")
        assert connect(module, dm) is dm and dm.collate_fn.mode == mode
    dm = TextDataModule(text_rows, labels="dfew")
    before = dm.collate_fn
    assert connect(object(), dm).collate_fn is before  # a module without a collator (ERV) leaves it as it is
    with pytest.raises(ConfigError, match="has no `collate_fn`"):
        connect(SFTModule(policy), object())
