"""A diverging run never checkpoints diverged weights: a step with a non-finite loss/gradient is skipped
(weights and optimizer state unchanged, counted), `max_nonfinite_skips` in a row stop the run with
`TrainingDivergedError`, and weights that turn non-finite after a step stop it before that step is saved."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from faults import BlowUpAt, NaNAt

from ecr.data import TextDataModule
from ecr.errors import TrainingDivergedError


def _data(tmp: Path) -> TextDataModule:
    rows = [{"id": f"r{i}", "text": f"row {i} " + "ab" * i, "label": ["happy", "sad"][i % 2]} for i in range(8)]
    path = tmp / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return TextDataModule(path, labels="dfew", batch_size=2, val_fraction=0.0, test_fraction=0.0)


def _fit(module: L.LightningModule, tmp: Path, steps: int = 8) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp,
        callbacks=[L.pytorch.callbacks.ModelCheckpoint(tmp / "ck", save_last=True, every_n_train_steps=1)],
    )  # fmt: skip
    trainer.fit(module, datamodule=_data(tmp))
    return trainer


def _last_weights(tmp: Path) -> tuple[int, dict[str, torch.Tensor]]:
    ckpt = torch.load(tmp / "ck" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["global_step"], ckpt["state_dict"]


def test_a_nonfinite_step_is_skipped_and_counted(tmp_path: Path) -> None:
    L.seed_everything(0)
    module = NaNAt([3, 5])
    seen: list[torch.Tensor] = []

    class Weights(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            seen.append(pl_module.head.weight.detach().clone())

    trainer = L.Trainer(
        accelerator="cpu", max_steps=6, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[Weights()],
    )  # fmt: skip
    trainer.fit(module, datamodule=_data(tmp_path))
    assert module.nonfinite_skips == 2 and trainer.global_step == 6
    assert torch.equal(seen[2], seen[1]) and torch.equal(seen[4], seen[3])  # steps 3 and 5 changed nothing
    assert not torch.equal(seen[3], seen[2])  # training went on
    assert all(torch.isfinite(w).all() for w in seen)


def test_consecutive_nonfinite_steps_stop_the_run_with_good_checkpoints(tmp_path: Path) -> None:
    L.seed_everything(0)
    module = NaNAt([4, 5, 6, 7])
    with pytest.raises(TrainingDivergedError, match="3 steps in a row"):
        _fit(module, tmp_path)
    step, state = _last_weights(tmp_path)
    assert step == 5 and all(torch.isfinite(v).all() for v in state.values())  # steps 4, 5 skipped; 6 stopped


def test_weights_that_diverge_stop_before_they_are_checkpointed(tmp_path: Path) -> None:
    L.seed_everything(0)
    module = BlowUpAt(
        3, optimizer=partial(torch.optim.SGD, lr=10.0), optimization={"warmup_ratio": 0.0, "scheduler": "constant"}
    )
    with pytest.raises(TrainingDivergedError, match="step 3: weights are not finite"):
        _fit(module, tmp_path)
    step, state = _last_weights(tmp_path)
    assert step == 2 and all(torch.isfinite(v).all() for v in state.values())


def test_a_step_that_explodes_finite_weights_stops_before_they_are_checkpointed(tmp_path: Path) -> None:
    L.seed_everything(0)
    sgd = partial(torch.optim.SGD, lr=1e5)  # a step of ~1e4 on weights of norm ~1: finite, but exploded
    module = NaNAt([], optimizer=sgd, optimization={"warmup_ratio": 0.0, "scheduler": "constant"})
    with pytest.raises(TrainingDivergedError, match="step 1: the optimizer step exploded the weights"):
        _fit(module, tmp_path)
    assert not (tmp_path / "ck" / "last.ckpt").exists()  # nothing saved from the exploded step


def test_ecr_fit_with_a_huge_lr_never_checkpoints_exploded_weights(tmp_path: Path) -> None:
    """Issue 19 item 4 through the CLI: lr 1e30 with a checkpoint every step. The step that blows the weights up
    to ~1e30 still has a finite loss; it must stop the run before its checkpoint, so `last.ckpt` holds weights a
    resume can train from (before: |w| = 1e30 saved, and the message claimed the last good weights)."""
    import yaml
    from faults import record_outcome, run_ecr

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"row {i} " + "ab" * i, "label": "happy"}) + "\n" for i in range(8)))
    config = {
        "seed_everything": 0,
        "model": {"class_path": "faults.ToyStage", "init_args": {"optimization": {"lr": 1e30, "warmup_ratio": 0.5}}},
        "data": {"class_path": "ecr.data.TextDataModule",
                 "init_args": {"manifest": str(rows), "labels": "dfew", "batch_size": 2, "val_fraction": 0.0}},
        "trainer": {
            "accelerator": "cpu", "max_steps": 6, "limit_val_batches": 0, "num_sanity_val_steps": 0,
            "enable_progress_bar": False, "enable_model_summary": False, "logger": False,
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"dirpath": str(tmp_path / "ck"), "save_last": True, "save_top_k": 0,
                                         "every_n_train_steps": 1}}],
        },
    }  # fmt: skip
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(config))
    proc = run_ecr(["fit", "--config", str(tmp_path / "fit.yaml")], cwd=tmp_path)
    last = tmp_path / "ck" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)["state_dict"] if last.is_file() else {}
    biggest = max((float(v.abs().max()) for v in state.values()), default=0.0)
    record_outcome("divergence (ecr fit, lr 1e30, checkpoint every step)", "4. exploded weights", "last.ckpt",
                   f"rc {proc.returncode}, max |w| in last.ckpt {biggest:.3g}")  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "TrainingDivergedError: step 2" in proc.stderr, proc.stderr[-3000:]
    assert "stopped before checkpointing them" in proc.stderr, proc.stderr[-3000:]
    assert state and biggest < 10.0  # step 1 (warmup: lr 0) was saved; step 2 (lr 3e29) exploded, stopped
