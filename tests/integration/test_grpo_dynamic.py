"""Dynamic sampling (DAPO) in real Lightning fits on the tiny Omni model and real clips.

One optimizer step with `dynamic_sampling` draws prompt batches until a batch of groups with reward spread is
held; the step must equal a plain step on exactly those groups (prompts of different lengths joined into one
batch), on one process and with two DDP processes, and a DDP rank that finds no such group must not hang. The
step draws its batches from the dataloader itself, under the precision plugin's autocast: collation must not run
in bf16.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
from support.equivalence import assert_same_update, one_step
from support.tiny import SMALL, clip_data

from ecr.fixtures import synthesize
from ecr.models import PolicyConfig
from ecr.modules.grpo import GRPOModule
from ecr.modules.wiring import connect
from ecr.rl.rewards import CombinedReward, RewardSpec


@pytest.fixture(scope="module")
def mixed_clips(tmp_path_factory) -> Path:
    """Two 1 s and two 2 s clips (their prompts differ in audio tokens, so joined batches are padded), labelled
    angry, happy, sad, angry in manifest order; `dynamic.jsonl` holds all four, `kept.jsonl` the middle two."""
    root = tmp_path_factory.mktemp("mixed")
    rows = []
    for name, duration in (("short", 1.0), ("long", 2.0)):
        manifest = synthesize(root / name, num_clips=2, seed=5, size=64, duration=duration)
        for line in manifest.read_text().splitlines():
            row = json.loads(line)
            rows.append(dict(row, id=f"{name}/{row['id']}", video=f"{name}/{row['video']}", split="train"))
    for row, label in zip(rows, ["angry", "happy", "sad", "angry"], strict=True):
        row["label"] = label
    write = lambda name, part: (root / name).write_text("".join(json.dumps(r) + "\n" for r in part))  # noqa: E731
    write("dynamic.jsonl", rows)
    write("kept.jsonl", rows[1:3])
    return root


def test_dynamic_sampling_trains_the_informative_groups_as_one_batch(tiny, mixed_clips, tmp_path) -> None:
    """Batch size 2, angry clips' groups have no reward spread: the step draws [angry, happy] (keeps happy), then
    [sad, angry] (keeps sad), and trains [happy, sad] as one batch of a short and a long prompt. That is the step
    of a plain run on [happy, sad] (same loss normalisation: filtering each draw and accumulating would not be)."""
    common = {"flat_label": "angry", "loss_type": "grpo", "batch_size": 2}
    dyn = one_step(tiny, mixed_clips, tmp_path / "dyn.pt", manifest="dynamic.jsonl", dynamic_sampling=True, **common)
    plain = one_step(tiny, mixed_clips, tmp_path / "plain.pt", manifest="kept.jsonl", **common)
    assert_same_update(dyn, plain)


@pytest.mark.slow
def test_dynamic_sampling_under_ddp_equals_one_process(tiny, mixed_clips, tmp_path) -> None:
    """Two gloo ranks with one prompt per micro-batch: rank 0 draws angry then sad, rank 1 happy (kept at once,
    then draws again with rank 0: every rank makes the same draws). The update equals the plain step on the
    kept [happy, sad]... in DDP's shard order, so compare with the one-process dynamic step of the same data."""
    common = {"flat_label": "angry", "loss_type": "grpo", "manifest": "dynamic.jsonl", "dynamic_sampling": True}
    ddp = one_step(tiny, mixed_clips, tmp_path / "ddp.pt", batch_size=1, devices=2, **common)
    single = one_step(tiny, mixed_clips, tmp_path / "one.pt", batch_size=2, **common)
    assert_same_update(ddp, single)


@pytest.mark.slow
def test_a_ddp_rank_with_no_informative_group_trains_nothing_and_does_not_hang(tiny, mixed_clips, tmp_path) -> None:
    """No resampling (max_resample_rounds 0): rank 0's only draw is an angry clip (no spread), rank 1's is happy.
    Rank 0 trains an inert stand-in (no active token); the step completes and, with dapo (normalised by the
    step's tokens on all ranks), equals a plain one-process step on happy alone. (grpo/bnpo/dr_grpo average the
    ranks' micro-batch means, so an empty rank counts as a zero there, as a rank of flat groups would.)"""
    common = {"flat_label": "angry", "loss_type": "dapo"}
    ddp = one_step(
        tiny, mixed_clips, tmp_path / "ddp.pt", batch_size=1, devices=2, manifest="dynamic.jsonl",
        dynamic_sampling=True, max_resample_rounds=0, **common,
    )  # fmt: skip
    (mixed_clips / "happy.jsonl").write_text((mixed_clips / "kept.jsonl").read_text().splitlines()[0] + "\n")
    alone = one_step(tiny, mixed_clips, tmp_path / "alone.pt", batch_size=1, manifest="happy.jsonl", **common)
    assert_same_update(ddp, alone)


def _flat_for_angry(texts: list[str], labels: list[str]) -> list[float]:
    return [0.5 if label == "angry" else len(text) % 3 for text, label in zip(texts, labels, strict=True)]


def test_batches_drawn_in_the_step_are_collated_outside_autocast(tiny, mixed_clips, tmp_path) -> None:
    """bf16-mixed on the CPU, no DataLoader workers: the step's own draws collate in the main process while the
    precision plugin's autocast is on; Whisper's feature extractor then fails on bf16 ("unsupported ScalarType
    BFloat16") unless the draw turns autocast off, as Lightning's own fetch (before the step) is."""
    policy = PolicyConfig(model=str(tiny), lora={"r": 4, "dropout": 0.0}, inputs=SMALL)
    grpo = {"dynamic_sampling": True, "max_resample_rounds": 1, "log_completions_every_n_steps": 0}
    module = GRPOModule(policy, sampling={"max_new_tokens": 4}, grpo=grpo)
    module.reward = CombinedReward([RewardSpec("r", _flat_for_angry)])
    trainer = L.Trainer(
        accelerator="cpu", devices=1, precision="bf16-mixed", max_steps=1, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, datamodule=connect(module, clip_data(mixed_clips, 2, "dynamic.jsonl")))
    assert trainer.global_step == 1 and trainer.callback_metrics["train/dynamic/rounds"] >= 1
