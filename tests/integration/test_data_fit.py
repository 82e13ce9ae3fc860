"""The synthetic dataset through a real Lightning fit: a tiny video+audio model learns the emotions.

This is the contract the stages rely on: the DataModule is built from arguments, the LightningModule plugs
its own collator in its `setup()` hook, clips are decoded in DataLoader workers (cached after the first
epoch), a broken clip is skipped and reported, and the cues of the synthetic set are learnable.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.nn import functional as F

from ecr.data import ClipDataModule, ClipSample
from ecr.fixtures import synthesize


def features_collate(samples: list[ClipSample]) -> dict[str, torch.Tensor]:
    """Task collator: pooled colours of the frames and a log spectrum of the first second of audio."""
    frames = torch.stack([s["frames"] for s in samples]).float() / 255  # [B, T, 3, H, W]
    b, t = frames.shape[:2]
    video = F.adaptive_avg_pool2d(frames.flatten(0, 1), 4).view(b, t, -1)  # [B, T, 48]
    audio = torch.stack([s["audio"][:16000] for s in samples])  # [B, 16000]
    spec = torch.fft.rfft(audio).abs()[:, :4096]  # 0..2 kHz, [B, 4096]
    bands = torch.log1p(F.avg_pool1d(spec.unsqueeze(1), 32).squeeze(1))  # [B, 128]
    feats = torch.cat([video.mean(1), video.std(1), bands], dim=1)  # [B, 224]
    return {"x": feats, "y": torch.tensor([s["label_id"] for s in samples])}


class TinyAVClassifier(LightningModule):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(224), nn.Linear(224, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def setup(self, stage: str) -> None:
        self.trainer.datamodule.collate_fn = features_collate  # collation is injected by the task

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self.net(batch["x"]), batch["y"])
        self.log("train/loss", loss, batch_size=len(batch["y"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        acc = (self.net(batch["x"]).argmax(-1) == batch["y"]).float().mean()
        self.log("val/acc", acc, batch_size=len(batch["y"]))

    def test_step(self, batch: dict, batch_idx: int) -> None:
        acc = (self.net(batch["x"]).argmax(-1) == batch["y"]).float().mean()
        self.log("test/acc", acc, batch_size=len(batch["y"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def test_tiny_model_learns_synthetic_emotions_through_lightning(tmp_path: Path, capsys) -> None:
    data = tmp_path / "synth"
    manifest = synthesize(data, num_clips=42, labels="dfew", seed=0)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    (data / "clips" / "broken.mp4").write_bytes(b"\x00" * 100)  # one bad training row: skipped, reported
    rows.append({"id": "broken", "video": "clips/broken.mp4", "label": "sad", "split": "train"})
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))

    dm = ClipDataModule(
        root=data,
        manifest=manifest,
        labels="dfew",
        batch_size=8,
        num_workers=2,
        seed=0,
        cache_dir=tmp_path / "cache",
        num_frames=4,
        on_error="skip",
    )
    model = TinyAVClassifier(num_classes=7)
    logger = TensorBoardLogger(tmp_path / "logs", name="tiny")
    trainer = Trainer(
        max_epochs=15,
        accelerator="cpu",
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(model, datamodule=dm)
    assert [f.id for f in dm.skipped["train"]] == ["broken"]
    assert "skipped 1 clip(s)" in capsys.readouterr().err
    assert trainer.callback_metrics["val/acc"] >= 0.8
    acc = trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"]
    assert acc >= 0.8
    assert dm.skip_counts["train"] == 15  # once per epoch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logger.log_dir))
    events.Reload()
    skipped = [e.value for e in events.Scalars("data/skipped_train")]
    assert skipped == [1.0] * 15
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 42  # every good clip decoded once, then cached
