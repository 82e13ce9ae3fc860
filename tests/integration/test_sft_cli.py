"""The SFT stage through the `ecr` command line: shipped configs, DeepSpeed stacking, the demo fit with its
TensorBoard logs, `ecr model tiny` and `ecr export`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ecr.cli import cli_main, main
from ecr.fixtures import synthesize

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DEEPSPEED = {
    "zero2": (2, False, False),
    "zero2_offload": (2, True, False),
    "zero3": (3, False, False),
    "zero3_offload": (3, True, True),
}


def test_sft_config_builds_without_loading_weights():
    cli = cli_main(["--config", str(CONFIGS / "sft.yaml"), "--trainer.logger", "false"], run=False)
    policy = cli.model.policy_config
    assert (policy.model, policy.quantization, policy.lora.enabled, policy.dtype) == (
        "Qwen/Qwen2.5-Omni-3B",
        "8bit",
        True,
        "bfloat16",
    )
    assert cli.model.model is None  # heavy loading waits for configure_model()
    assert (cli.model.optimization.lr, cli.model.optimization.warmup_ratio) == (2e-5, 0.03)
    assert cli.trainer.accumulate_grad_batches * cli.datamodule.batch_size == 32
    assert cli.datamodule.num_frames == 8


def test_optimizer_is_injectable_from_the_config():
    cli = cli_main(
        ["--config", str(CONFIGS / "sft.yaml"), "--trainer.logger", "false",
         "--model.init_args.optimizer", "torch.optim.SGD", "--model.init_args.optimizer.lr", "0.5"],
        run=False,
    )  # fmt: skip
    opt = cli.model.optimizer_factory([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["lr"] == 0.5


@pytest.mark.parametrize("name", sorted(DEEPSPEED))
def test_deepspeed_configs_stack_onto_the_stage_config(name):
    from lightning.pytorch.strategies import DeepSpeedStrategy

    cli = cli_main(
        ["--config", str(CONFIGS / "sft.yaml"), "--config", str(CONFIGS / "deepspeed" / f"{name}.yaml"),
         "--trainer.logger", "false", "--trainer.num_nodes", "2"],
        run=False,
    )  # fmt: skip
    strategy = cli.trainer.strategy
    assert isinstance(strategy, DeepSpeedStrategy)
    stage, offload_opt, offload_params = DEEPSPEED[name]
    zero = strategy.config["zero_optimization"]
    assert zero["stage"] == stage
    assert ("offload_optimizer" in zero) == offload_opt
    assert ("offload_param" in zero) == offload_params
    assert cli.trainer.num_nodes == 2
    # stage settings survive the stacking; ZeRO-3 swaps 8-bit for unquantised weights (not partitionable)
    assert cli.model.optimization.lr == 2e-5 and cli.trainer.accumulate_grad_batches == 8
    assert cli.model.policy_config.quantization == ("none" if stage == 3 else "8bit")


def _run_main(argv: list[str]) -> None:
    """`ecr <utility command>`: exits with the command's return code."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0


def _events(logdir: Path) -> tuple[set[str], list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(logdir.rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard events under {logdir}"
    scalars: set[str] = set()
    texts: list[str] = []
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        scalars |= set(acc.Tags()["scalars"])
        for tag in acc.Tags()["tensors"]:
            texts += [b.decode() for e in acc.Tensors(tag) for b in e.tensor_proto.string_val]
    return scalars, texts


def test_demo_fit_logs_and_exports(tmp_path):
    _run_main(["model", "tiny", "--out", str(tmp_path / "tiny")])
    assert (tmp_path / "tiny" / "model.safetensors").is_file()
    synthesize(tmp_path / "synth", num_clips=8, labels="dfew", seed=0, size=64, duration=2.0)
    runs = tmp_path / "runs"
    cli_main(
        ["fit", "--config", str(CONFIGS / "demo" / "sft.yaml"),
         "--model.init_args.policy.model", str(tmp_path / "tiny"),
         "--data.init_args.root", str(tmp_path / "synth"),
         "--data.init_args.manifest", str(tmp_path / "synth" / "manifest.jsonl"),
         "--data.init_args.cache_dir", str(tmp_path / "cache"), "--data.init_args.batch_size", "2",
         "--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "1", "--trainer.log_every_n_steps", "1",
         "--trainer.default_root_dir", str(runs), "--trainer.logger.init_args.save_dir", str(runs)],
    )  # fmt: skip
    scalars, texts = _events(runs)
    assert {"train/loss", "val/loss", "lr", "train/grad_norm"} <= scalars, scalars
    assert "train/device/tokens_per_sec" in scalars, scalars  # named by what it counts (no world figure on 1 device)
    assert not any("items_per_sec" in tag for tag in scalars) and "hp_metric" not in scalars, scalars
    assert any("| clip | label | completion |" in t for t in texts)
    ckpt = next(runs.rglob("last.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    # the demo trains the towers too (docs/miniature.md): they are in the checkpoint (frozen ones would not be)
    assert any(".visual." in k for k in state) and any(".audio_tower." in k for k in state)
    _run_main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "export")])
    assert (tmp_path / "export" / "merged" / "model.safetensors").is_file()  # full fine-tune -> a model folder
