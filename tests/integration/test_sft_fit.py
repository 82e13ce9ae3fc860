"""SFT with real Lightning fits on the tiny Omni model and real synthetic clips (ClipDataModule).

- the model overfits a handful of clips: loss falls by a large factor and greedy generation reproduces the
  target format and label for every clip;
- 8-bit + LoRA trains on CPU: loss finite, adapters move, frozen weights do not; the checkpoint holds only
  trainable tensors; export writes a PEFT adapter and a merged model that score like the trained policy;
- resuming from a checkpoint (shuffled data; epoch boundary and mid-epoch) continues exactly like an
  uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from support.tiny import SMALL, LossHistory, clip_data, cpu_trainer, synth_clips

from ecr.data.datamodule import ClipDataModule
from ecr.errors import ConfigError
from ecr.export import export_policy
from ecr.models import PolicyConfig, load_policy
from ecr.models.hf import model_inputs
from ecr.modules.sft import SFTModule
from ecr.modules.wiring import connect
from ecr.prompts import format_target, is_well_formed, parse_completion


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Four synthetic clips, all in the train split (the overfit set)."""
    root = synth_clips(tmp_path_factory.mktemp("clips"), num_clips=4, split="train")
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    # fast overfit set: two clips (different labels), explanation = the synthetic concluding sentence
    short = [dict(r, explanation=r["explanation"].rsplit(". ", 1)[-1]) for r in rows[:2]]
    (root / "two.jsonl").write_text("".join(json.dumps(r) + "\n" for r in short))
    return root


def _data(root: Path, batch_size: int = 4, manifest: str = "manifest.jsonl", shuffle: bool = False) -> ClipDataModule:
    return clip_data(root, batch_size, manifest, shuffle=shuffle)


_trainer = cpu_trainer


def _overfit(tiny: Path, data: ClipDataModule, steps: int, lr: float, tmp: Path) -> tuple[list[float], list[str], list]:
    L.seed_everything(0)
    policy = PolicyConfig(model=str(tiny), lora={"enabled": False}, inputs=SMALL)
    module = SFTModule(policy, optimization={"lr": lr, "warmup_ratio": 0.07})
    history = LossHistory()
    _trainer(tmp, max_steps=steps, callbacks=[history]).fit(module, datamodule=connect(module, data))
    samples = [data.datasets["train"][i] for i in range(len(data.datasets["train"]))]
    texts = module.generate_texts(samples, max_new_tokens=80, do_sample=False)
    return history.losses, texts, samples


def _assert_learned(losses: list[float], texts: list[str], samples: list, min_ratio: float) -> None:
    first, last = losses[0], sum(losses[-3:]) / 3
    assert first / last > min_ratio, (first, last)
    for sample, text in zip(samples, texts, strict=True):
        assert is_well_formed(text, strict=True), text
        assert parse_completion(text).answer == sample["label"], text


def test_tiny_model_learns_format_and_labels_of_two_clips(tiny, clips, tmp_path):
    """Fast version: two clips with different labels and one-sentence explanations, 60 steps."""
    losses, texts, samples = _overfit(tiny, _data(clips, batch_size=2, manifest="two.jsonl"), 60, 7e-3, tmp_path)
    assert len({s["label"] for s in samples}) == 2
    _assert_learned(losses, texts, samples, min_ratio=20)
    assert texts == [format_target(s["explanation"], s["label"]) for s in samples]


@pytest.mark.slow
def test_tiny_model_overfits_four_clips_exactly(tiny, clips, tmp_path):
    losses, texts, samples = _overfit(tiny, _data(clips), 200, 2e-2, tmp_path)
    _assert_learned(losses, texts, samples, min_ratio=100)
    assert texts == [format_target(s["explanation"], s["label"]) for s in samples]


def _params(module: SFTModule) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone().float() for n, p in module.named_parameters()}


def test_8bit_lora_fit_checkpoint_and_export(tiny, clips, tmp_path):
    L.seed_everything(0)
    policy = PolicyConfig(model=str(tiny), quantization="8bit", lora={"r": 4, "alpha": 8, "dropout": 0.0}, inputs=SMALL)
    module = SFTModule(policy, optimization={"lr": 5e-3, "warmup_ratio": 0.0})
    module.configure_model()
    before = _params(module)
    history = LossHistory()
    ckpt_cb = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    _trainer(tmp_path, max_steps=4, callbacks=[history, ckpt_cb], enable_checkpointing=True).fit(
        module, datamodule=connect(module, _data(clips, batch_size=2))
    )
    assert all(torch.isfinite(torch.tensor(history.losses)))
    after = _params(module)
    trainable = module.checkpoint_keys()
    assert trainable and all("lora_" in k for k in trainable)
    assert all(not torch.equal(before[k], after[k]) for k in trainable if "lora_B" in k)
    assert all(torch.equal(before[k], after[k]) for k in before if k not in trainable)

    # the checkpoint holds exactly the trainable tensors (+ optimizer state of those only)
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert set(ckpt["state_dict"]) == trainable
    assert len(ckpt["optimizer_states"][0]["state"]) == len(trainable)

    # load_from_checkpoint rebuilds the policy from hparams and restores the adapters
    restored = SFTModule.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt")
    assert all(torch.equal(dict(restored.named_parameters())[k], module.get_parameter(k)) for k in trainable)
    partial = dict(ckpt["state_dict"])
    partial.pop(next(iter(partial)))
    with pytest.raises(ConfigError, match="missing"):
        restored.load_state_dict(partial)

    # export: adapter (PEFT) and merged model score like the trained policy
    written = export_policy(tmp_path / "ckpt" / "last.ckpt", tmp_path / "export", merge=True)
    assert (written["adapter"] / "adapter_model.safetensors").is_file()
    assert (written["merged"] / "config.json").is_file() and (written["merged"] / "processor_config.json").is_file()
    batch = module.collator(_first_samples(clips, 2))
    merged = load_policy(PolicyConfig(model=str(written["merged"]), lora={"enabled": False}, inputs=SMALL))
    unquantised = load_policy(PolicyConfig(model=str(tiny), adapter=str(written["adapter"]), inputs=SMALL))
    for m in (module, restored, merged.model, unquantised.model):
        m.eval()
    with torch.no_grad():
        # the restored 8-bit policy computes exactly what the trained one does
        assert torch.equal(module.model(**model_inputs(batch)).logits, restored.model(**model_inputs(batch)).logits)
        # the merged folder equals base + adapter, both unquantised
        ref = unquantised.model(**model_inputs(batch)).logits
        assert torch.allclose(merged.model(**model_inputs(batch)).logits, ref, atol=1e-4)


def _first_samples(root: Path, n: int) -> list:
    data = _data(root)
    data.setup()
    return [data.datasets["train"][i] for i in range(n)]


class StopAfter(L.Callback):
    """Interrupt a run after `steps` optimizer steps (same schedule as the full run, unlike a smaller max_steps)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.steps:
            trainer.should_stop = True


class BatchIds(L.Callback):
    def __init__(self) -> None:
        self.ids: list[tuple] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.ids.append(tuple(batch["meta"]["ids"]))


def test_resume_matches_uninterrupted_run(tiny, clips, tmp_path):
    """Shuffled data (4 clips, 2 batches per epoch): resuming at an epoch boundary (step 2) and mid-epoch
    (step 3) continues with the uninterrupted run's batches, losses and parameters."""

    def run(stop: int | None = None, ckpt_path: Path | None = None):
        L.seed_everything(0)
        policy = PolicyConfig(model=str(tiny), lora={"r": 4, "alpha": 8, "dropout": 0.0}, inputs=SMALL)
        module = SFTModule(policy, optimization={"lr": 5e-3, "warmup_ratio": 0.25})
        history, ids = LossHistory(), BatchIds()
        callbacks: list = [history, ids]
        if stop is not None:
            callbacks += [
                StopAfter(stop),
                L.pytorch.callbacks.ModelCheckpoint(
                    dirpath=tmp_path / "ck", filename="{step}", save_top_k=-1, every_n_train_steps=1
                ),
            ]
        trainer = _trainer(tmp_path, max_steps=6, callbacks=callbacks, enable_checkpointing=stop is not None)
        trainer.fit(module, datamodule=connect(module, _data(clips, batch_size=2, shuffle=True)), ckpt_path=ckpt_path)
        return module, history.losses, ids.ids

    full, full_losses, full_ids = run()
    assert len(full_losses) == 6
    assert full_ids[0:2] != full_ids[2:4] != full_ids[4:6]  # a new order every epoch
    _, first_losses, _ = run(stop=3)  # checkpoints after steps 1, 2 (epoch boundary) and 3 (mid-epoch)
    assert first_losses == pytest.approx(full_losses[:3], abs=1e-6)
    for step in (2, 3):
        ckpt = tmp_path / "ck" / f"step={step}.ckpt"
        torch.load(ckpt, map_location="cpu", weights_only=True)  # plain hparams (data built with Paths)
        resumed, resumed_losses, resumed_ids = run(ckpt_path=ckpt)
        assert resumed_ids == full_ids[step:], step
        assert resumed_losses == pytest.approx(full_losses[step:], abs=1e-6), step
        for name in full.checkpoint_keys():
            assert torch.allclose(full.get_parameter(name), resumed.get_parameter(name), atol=1e-6), name


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tiny, clips, tmp_path):
    """Multi-process SFT (gloo): every rank generates for the sample logger, rank zero writes the texts."""
    from ecr.callbacks import GenerationSampleLogger

    rows = [json.loads(line) for line in (clips / "manifest.jsonl").read_text().splitlines()]
    (clips / "ddp.jsonl").write_text(
        "".join(json.dumps(dict(r, split="val" if i == 3 else "train")) + "\n" for i, r in enumerate(rows))
    )
    policy = PolicyConfig(model=str(tiny), lora={"r": 4}, inputs=SMALL)
    module = SFTModule(policy, optimization={"lr": 1e-3})
    logger = L.pytorch.loggers.TensorBoardLogger(tmp_path / "tb", name="ddp")
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, logger=logger, enable_checkpointing=False,
        num_sanity_val_steps=0, enable_progress_bar=False,
        callbacks=[GenerationSampleLogger(num_samples=1, max_new_tokens=4)],
    )  # fmt: skip
    trainer.fit(module, datamodule=connect(module, _data(clips, batch_size=1, manifest="ddp.jsonl")))
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))
