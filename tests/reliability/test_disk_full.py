"""A full disk while saving a checkpoint leaves the previous checkpoint intact and says so (a real small tmpfs
where it can be mounted, i.e. as root on Linux; skipped elsewhere); `ecr fit` installs the reporting writer.
A full disk during `ecr export --merge` is one line naming the folder and leaves no half-written `merged/`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch

from ecr.errors import CheckpointWriteError
from ecr.modules.checkpointing import SafeCheckpointIO


class _Big(L.LightningModule):
    """~0.8 MB of weights (+ SGD momentum): checkpoints of ~1.6 MB."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(200_000))

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        return (self.w - batch[0].mean()).pow(2).mean()

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    def train_dataloader(self):  # noqa: ANN201
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(8.0)), batch_size=2)


def _tmpfs(mount: Path, size: str):  # noqa: ANN202
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path):
    yield from _tmpfs(tmp_path / "disk", "2600k")


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """300 kB: a tiny causal LM's LoRA adapter (~96 kB) fits, its merged model (~376 kB) does not."""
    yield from _tmpfs(tmp_path / "disk", "300k")


def test_full_disk_keeps_the_previous_checkpoint_and_says_so(small_disk: Path) -> None:
    ckpt_dir = small_disk / "ck"
    trainer = L.Trainer(
        accelerator="cpu", max_steps=4, logger=False, enable_progress_bar=False, enable_model_summary=False,
        plugins=[SafeCheckpointIO()], default_root_dir=small_disk,
        callbacks=[L.pytorch.callbacks.ModelCheckpoint(ckpt_dir, filename="last", save_top_k=-1, every_n_train_steps=1,
                                                       enable_version_counter=False)],
    )  # fmt: skip
    with pytest.raises(CheckpointWriteError, match="still holds the previous checkpoint") as info:
        trainer.fit(_Big())
    assert "last.ckpt" in str(info.value)
    saved = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 1  # step 1 fitted; writing step 2 beside it did not, and step 1 survived
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.ckpt"]  # no torn temporary left behind


def test_ecr_fit_installs_the_reporting_checkpoint_writer(tmp_path: Path) -> None:
    from ecr.cli import cli_main

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "a", "label": "happy"}\n')
    cli = cli_main(
        ["--model", "faults.ToyStage", "--data", "ecr.data.TextDataModule", "--data.manifest", str(rows),
         "--trainer.logger", "false"],
        run=False,
    )  # fmt: skip
    assert isinstance(cli.trainer.strategy.checkpoint_io, SafeCheckpointIO)


def test_a_full_disk_during_export_leaves_no_half_written_model(tiny_disk: Path, tmp_path: Path) -> None:
    from faults import record_outcome, run_ecr

    from ecr.fixtures.tiny_models import build_tiny_causal_lm
    from ecr.models import PolicyConfig
    from ecr.modules.sft import SFTModule

    tiny = build_tiny_causal_lm(tmp_path / "tiny", hidden_size=32, num_layers=1, vocab_size=1024, seed=0)
    module = SFTModule(PolicyConfig(model=str(tiny), backbone="causal_lm", lora={"r": 4, "alpha": 8, "dropout": 0.0}))
    module.configure_model()
    keep = module.checkpoint_keys()
    ckpt = tmp_path / "sft.ckpt"  # what `ecr fit` saves of a LoRA SFT: its policy config and trained tensors
    torch.save({"hyper_parameters": dict(module.hparams),
                "state_dict": {k: v for k, v in module.state_dict().items() if k in keep}}, ckpt)  # fmt: skip
    out = tiny_disk / "export"
    proc = run_ecr(["export", "--checkpoint", str(ckpt), "--out", str(out), "--merge", "true"], cwd=tmp_path)
    left = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    traceback = ", traceback" if "Traceback" in proc.stderr else ""
    outcome = f"rc {proc.returncode}{traceback}, left {left}"
    record_outcome("full disk (ecr export --merge)", "6. disk full while writing merged/", "ecr export", outcome)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"OutputWriteError: writing {out / 'merged'} failed (No space left on device)" in proc.stderr, proc.stderr
    assert left == ["adapter"]  # the complete adapter; no merged/ with only config.json, no temporary folder


@pytest.fixture
def page_disk(tmp_path: Path):
    """8 kB: a few hundred labelled rows do not fit."""
    yield from _tmpfs(tmp_path / "disk", "8k")


def test_a_full_disk_during_label_names_the_output_and_leaves_no_tmp(page_disk: Path, tmp_path: Path) -> None:
    import json

    from faults import record_outcome, run_ecr

    texts = tmp_path / "texts.jsonl"
    rows = [{"id": f"t{i}", "text": f"I am so happy today, number {i}. " * 4} for i in range(400)]
    texts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = page_disk / "labels.jsonl"
    proc = run_ecr(["label", "--input", str(texts), "--output", str(out), "--teacher", "lexicon", "--labels", "dfew"],
                   cwd=tmp_path)  # fmt: skip
    left = sorted(p.name for p in page_disk.iterdir())
    record_outcome("full disk (ecr label)", "disk full while writing the labels", "ecr label",
                   f"rc {proc.returncode}, left {left}")  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"writing {out} failed (No space left on device)" in proc.stderr, proc.stderr[-3000:]
    assert left == []  # no labels.jsonl.tmp
