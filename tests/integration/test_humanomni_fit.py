"""SFT and GRPO fits on the tiny HumanOmni checkpoint (released layout) with real synthetic clips.

- SFT (slow): a full fine-tune overfits two clips: the loss falls by a large factor and greedy generation
  reproduces the target format and label of each clip;
- GRPO: a LoRA run with a reference pass (β > 0) and μ = 2 updates runs, moves only the adapters and encodes
  the media (SigLIP, BERT router, projectors, Whisper) once per prompt batch per step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from support.tiny import LossHistory, cpu_trainer

from ecr.data import ClipDataModule
from ecr.fixtures import synthesize
from ecr.fixtures.tiny_models import build_tiny_humanomni
from ecr.models import PolicyConfig
from ecr.modules.grpo import GRPOModule
from ecr.modules.sft import SFTModule
from ecr.modules.wiring import connect
from ecr.prompts import format_target, is_well_formed, parse_completion
from ecr.rl.rewards import CombinedReward, RewardSpec
from ecr.rl.scorer import SamplingSettings


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_humanomni(tmp_path_factory.mktemp("tiny_ho"), audio_positions=150, num_frames=4)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    manifest = synthesize(root, num_clips=2, labels="dfew", seed=3, size=64, duration=2.0)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows = [dict(r, split="train", explanation=r["explanation"].rsplit(". ", 1)[-1]) for r in rows]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _data(root: Path) -> ClipDataModule:
    return ClipDataModule(
        root, format="custom", manifest=root / "manifest.jsonl", labels="dfew", num_frames=4, batch_size=2,
        val_fraction=0.0, shuffle=False, num_workers=0, on_error="raise",
    )  # fmt: skip


def _trainer(tmp: Path, max_steps: int, **kw) -> L.Trainer:
    return cpu_trainer(tmp, max_steps=max_steps, **kw)


@pytest.mark.slow
def test_sft_overfits_two_clips(tiny, clips, tmp_path):
    L.seed_everything(0)
    module = SFTModule(PolicyConfig(backbone="humanomni", model=str(tiny), lora={"enabled": False}),
                       optimization={"lr": 7e-3, "warmup_ratio": 0.07})  # fmt: skip
    history = LossHistory()
    data = _data(clips)
    _trainer(tmp_path, 60, callbacks=[history]).fit(module, datamodule=connect(module, data))
    samples = [data.datasets["train"][i] for i in range(len(data.datasets["train"]))]
    texts = module.generate_texts(samples, max_new_tokens=80, do_sample=False)
    first, last = history.losses[0], sum(history.losses[-3:]) / 3
    assert first / last > 20, history.losses
    for sample, text in zip(samples, texts, strict=True):
        assert is_well_formed(text, strict=True) and parse_completion(text).answer == sample["label"], text
    assert texts == [format_target(s["explanation"], s["label"]) for s in samples]


def vowel_share(completions, labels) -> list[float]:
    out = []
    for text in completions:
        letters = [c for c in text.lower() if c.isalpha()]
        out.append(sum(c in "aeiou" for c in letters) / max(1, len(letters)))
    return out


def test_grpo_steps_run_with_media_encoded_once(tiny, clips, tmp_path):
    L.seed_everything(0)
    policy = PolicyConfig(backbone="humanomni", model=str(tiny), lora={"r": 4, "alpha": 8, "dropout": 0.0})
    module = GRPOModule(policy, sampling=SamplingSettings(max_new_tokens=6), optimization={"lr": 1e-2},
                        grpo={"num_generations": 2, "num_iterations": 2, "beta": 0.04,
                              "log_completions_every_n_steps": 0})  # fmt: skip
    module.reward = CombinedReward([RewardSpec("vowels", vowel_share)])
    module.configure_model()
    inner = module.backbone.base_model.model
    calls = {"vision": 0, "audio": 0, "router": 0}
    for key, part in (("vision", inner.vision_tower), ("audio", inner.audio_tower), ("router", inner.bert_model)):
        part.register_forward_hook(lambda *_, key=key: calls.__setitem__(key, calls[key] + 1))
    start = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    trainer = _trainer(tmp_path, 2)
    trainer.fit(module, datamodule=connect(module, _data(clips)))
    assert trainer.global_step == 2
    assert calls == {"vision": 1, "audio": 1, "router": 1}  # one prompt batch trained on twice (μ = 2)
    moved = {n for n, p in module.model.named_parameters() if not torch.equal(p, start[n])}
    assert moved and all("lora_" in n for n in moved)
    assert math.isfinite(float(trainer.callback_metrics["train/reward"])) and module.nonfinite_skips == 0
