"""SFT on a text emotion task: a real Lightning fit of `SFTModule` with the `causal_lm` backbone (a tiny random
Qwen2 LM) on `TextDataModule` rows written from the synthetic dataset. The model overfits a handful of rows:
the loss falls by a large factor and greedy generation reproduces `<think>…</think>\\n<answer>label</answer>`
for every row. Same structure as test_sft_fit.py's Omni overfit test; the checkpoint loads weights-only.
The demo path runs through the command line: `ecr model tiny --kind causal_lm`, `ecr data synth --text`,
`ecr fit --config configs/demo/sft_text.yaml` (TensorBoard scalars + generated samples)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from ecr.cli import cli_main, main
from ecr.data import TextDataModule
from ecr.fixtures import synthesize, write_text_manifest
from ecr.fixtures.tiny_models import build_tiny_causal_lm
from ecr.models import PolicyConfig
from ecr.modules.sft import SFTModule
from ecr.modules.wiring import connect
from ecr.prompts import format_target, is_well_formed, parse_completion

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"), hidden_size=64)


@pytest.fixture(scope="module")
def text_rows(tmp_path_factory) -> Path:
    """Three text rows (three labels) from synthetic clips: text = cue sentences, explanation = the conclusion
    (short targets keep the overfit fast; the full explanations are exercised by the demo config)."""
    root = tmp_path_factory.mktemp("synth_text")
    manifest = synthesize(root, num_clips=3, labels="dfew", seed=4, size=32, duration=0.5)
    rows = [json.loads(line) for line in write_text_manifest(manifest).read_text().splitlines()]
    short = [dict(r, explanation=r["explanation"][len(r["text"]) + 1 :], split="train") for r in rows]
    path = root / "short.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in short))
    return path


class LossHistory(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_text_sft_learns_format_and_labels(tiny_lm, text_rows, tmp_path):
    L.seed_everything(0)
    data = TextDataModule(text_rows, labels="dfew", val_fraction=0.0, batch_size=3, shuffle=True)
    module = SFTModule(
        PolicyConfig(backbone="causal_lm", model=str(tiny_lm), lora={"enabled": False}),
        optimization={"lr": 7e-3, "warmup_ratio": 0.07},
    )
    history = LossHistory()
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, precision="32-true", max_steps=60, limit_val_batches=0, num_sanity_val_steps=0,
        logger=False, callbacks=[history, ckpt], enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, datamodule=connect(module, data))

    samples = [data.datasets["train"][i] for i in range(len(data.datasets["train"]))]
    assert len({s["label"] for s in samples}) == 3
    first, last = history.losses[0], sum(history.losses[-3:]) / 3
    assert first / last > 20, (first, last)
    texts = module.generate_texts(samples, max_new_tokens=60, do_sample=False)
    for sample, text in zip(samples, texts, strict=True):
        assert is_well_formed(text, strict=True), text
        assert parse_completion(text).answer == sample["label"], text
    assert texts == [format_target(s["explanation"], s["label"]) for s in samples]

    # the checkpoint (module + datamodule hparams) loads weights-only
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["datamodule_hyper_parameters"]["manifest"] == str(text_rows)


def _run_main(argv: list[str]) -> None:
    """`ecr <utility command>`: exits with the command's return code."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0


def test_demo_config_through_the_cli(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _run_main(["model", "tiny", "--out", str(tmp_path / "lm"), "--kind", "causal_lm", "--hidden-size", "32"])
    assert (tmp_path / "lm" / "model.safetensors").is_file() and not (
        tmp_path / "lm" / "processor_config.json"
    ).exists()
    synth = ["data", "synth", "--out", str(tmp_path / "synth"), "--num-clips", "8", "--size", "32"]
    _run_main([*synth, "--duration", "0.5", "--text", "true"])
    runs = tmp_path / "runs"
    cli_main(
        ["fit", "--config", str(CONFIGS / "demo" / "sft_text.yaml"),
         "--model.init_args.policy.model", str(tmp_path / "lm"),
         "--data.init_args.manifest", str(tmp_path / "synth" / "text.jsonl"),
         "--trainer.max_epochs", "1", "--trainer.check_val_every_n_epoch", "1", "--trainer.log_every_n_steps", "1",
         "--trainer.default_root_dir", str(runs), "--trainer.logger.init_args.save_dir", str(runs)],
    )  # fmt: skip
    (events,) = runs.rglob("events.out.tfevents.*")
    acc = EventAccumulator(str(events), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    assert {"train/loss", "val/loss", "lr"} <= set(acc.Tags()["scalars"])
    texts = [b.decode() for tag in acc.Tags()["tensors"] for e in acc.Tensors(tag) for b in e.tensor_proto.string_val]
    assert any("| clip | label | completion |" in t for t in texts)
    ckpt = torch.load(next(runs.rglob("last.ckpt")), map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["policy"]["backbone"] == "causal_lm"
