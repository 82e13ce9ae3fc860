"""A full disk while saving a checkpoint leaves the previous checkpoint intact and says so (a real small tmpfs
where it can be mounted, i.e. as root on Linux; skipped elsewhere); `ecr fit` installs the reporting writer."""

from __future__ import annotations

import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch

from ecr.errors import CheckpointWriteError
from ecr.modules.base import SafeCheckpointIO


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


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2600k", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


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
