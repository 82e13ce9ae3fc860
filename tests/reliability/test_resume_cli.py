"""Exact resume through the `ecr` command line (subprocesses): a run killed (SIGKILL, SIGTERM) between two
steps and resumed with `--ckpt_path last` (or the checkpoint file) trains on exactly the batches, losses and
learning rates of an uninterrupted run. Stages: `ToyStage` (the shared stage plumbing; its hparams carry no
`_class_path` of their own, like the policy stages'), SFT on the tiny Omni model with the demo config, and ERV
on the demo config (slow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from faults import read_records, run_ecr

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
LABELS = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]


def _ok(proc) -> None:  # noqa: ANN001
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _callbacks(records: Path, kill: tuple[int, str] | None) -> list[dict[str, Any]]:
    # dirpath: None explicitly: jsonargparse keeps the init_args a stacked config's callback at the same list
    # index had when they fit the new class (the demo ERV config's ExportVerifier `dirpath`)
    callbacks: list[dict[str, Any]] = [
        {"class_path": "faults.Record", "init_args": {"path": str(records)}},
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": None, "save_last": True, "save_top_k": 0, "every_n_train_steps": 1}},
    ]  # fmt: skip
    if kill is not None:
        callbacks.append({"class_path": "faults.KillAt", "init_args": {"step": kill[0], "signal": kill[1]}})
    return callbacks


def _write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _assert_same_run(full: list[dict], pieces: list[dict]) -> None:
    assert [r["step"] for r in pieces] == [r["step"] for r in full]
    assert [r["ids"] for r in pieces] == [r["ids"] for r in full]
    assert [r["loss"] for r in pieces] == pytest.approx([r["loss"] for r in full], abs=1e-6)
    assert [r["lr"] for r in pieces] == pytest.approx([r["lr"] for r in full], rel=1e-6)


def _kill_then_resume(tmp: Path, configs: list[Path], kill_configs: list[Path], records: Path, ckpt: str) -> list[dict]:
    """Run until the kill, then resume; the records of the steps the checkpoint holds + those of the resumed run."""
    killed = run_ecr(["fit", *[a for c in kill_configs for a in ("--config", str(c))]], cwd=tmp)
    assert killed.returncode != 0, "the kill did not stop the run"
    last = sorted(tmp.rglob("last.ckpt"))
    assert len(last) == 1, last
    saved_step = torch.load(last[0], map_location="cpu", weights_only=True)["global_step"]
    before = [r for r in read_records(records) if r["step"] <= saved_step]
    records.unlink()
    args = ["fit", *[a for c in configs for a in ("--config", str(c))]]
    resumed = run_ecr([*args, "--ckpt_path", ckpt if ckpt == "last" else str(last[0])], cwd=tmp)
    _ok(resumed)
    if ckpt == "last":
        assert f"resuming from {last[0]}" in resumed.stderr  # found in the earlier logger version's folder
    return before + read_records(records)


# ------------------------------------------------------------------------------------------------ toy stage
def _toy(tmp: Path, records: Path, kill: tuple[int, str] | None = None) -> Path:
    manifest = tmp.parent / "rows.jsonl"
    if not manifest.exists():
        rows = [
            {"id": f"r{i}", "text": f"row {i} " + "abcdefghij"[: 1 + i % 7] * (1 + i), "label": LABELS[i % 7],
             "explanation": "x.", "split": "train"}
            for i in range(10)
        ]  # fmt: skip
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = {
        "seed_everything": 0,
        "model": {"class_path": "faults.ToyStage"},
        "data": {
            "class_path": "ecr.data.TextDataModule",
            "init_args": {"manifest": str(manifest), "labels": "dfew", "batch_size": 3, "val_fraction": 0.0},
        },
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_epochs": 3, "limit_val_batches": 0, "num_sanity_val_steps": 0,
            "enable_progress_bar": False, "enable_model_summary": False,
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                       "init_args": {"save_dir": str(tmp / "logs")}},
            "callbacks": _callbacks(records, kill),
        },
    }  # fmt: skip
    return _write(tmp / ("kill.yaml" if kill else "run.yaml"), config)


@pytest.fixture(scope="module")
def toy_full(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("toy") / "full"
    tmp.mkdir()
    records = tmp / "records.jsonl"
    _ok(run_ecr(["fit", "--config", str(_toy(tmp, records))], cwd=tmp))
    full = read_records(records)
    assert len(full) == 12  # 10 rows, batch 3 -> 4 steps an epoch
    assert full[0:4] != full[4:8]  # reshuffled every epoch
    return full


# step 5 is one batch into epoch 1 (the reported bug: the resumed run replayed the epoch's first batch), 8 an
# epoch boundary; SIGTERM lets the current step finish (and checkpoint), then exits 143
@pytest.mark.parametrize(
    ("kill_step", "signal", "ckpt"),
    [
        pytest.param(5, "SIGKILL", "last", marks=pytest.mark.slow),
        pytest.param(8, "SIGKILL", "last", marks=pytest.mark.slow),
        (6, "SIGTERM", "file"),
    ],
)
def test_toy_stage_resumes_exactly(toy_full, tmp_path: Path, kill_step: int, signal: str, ckpt: str) -> None:
    tmp = tmp_path / "run"
    tmp.mkdir()
    records = tmp / "records.jsonl"
    pieces = _kill_then_resume(tmp, [_toy(tmp, records)], [_toy(tmp, records, (kill_step, signal))], records, ckpt)
    _assert_same_run(toy_full, pieces)


def test_sigterm_exits_nonzero_and_says_how_to_resume(tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"
    proc = run_ecr(["fit", "--config", str(_toy(tmp_path, records, (2, "SIGTERM")))], cwd=tmp_path)
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert "--ckpt_path last" in proc.stderr
    assert [r["step"] for r in read_records(records)] == [1, 2, 3]  # the current step finished


def _full_then_killed_and_resumed(tmp_path: Path, demo: Path, override, kill_step) -> tuple[list[dict], list[dict]]:  # noqa: ANN001
    """Records of an uninterrupted `demo` + `override` run, and of a run killed (SIGKILL) as optimizer step
    `kill_step(full) + 1` starts and resumed with `--ckpt_path last`."""
    full_dir, run_dir = tmp_path / "full", tmp_path / "run"
    full_dir.mkdir()
    run_dir.mkdir()
    full_records, records = full_dir / "records.jsonl", run_dir / "records.jsonl"
    _ok(run_ecr(["fit", "--config", str(demo), "--config", str(override(full_dir, full_records))], cwd=full_dir))
    full = read_records(full_records)
    kill = (kill_step(full), "SIGKILL")
    pieces = _kill_then_resume(
        run_dir, [demo, override(run_dir, records)], [demo, override(run_dir, records, kill)], records, "last"
    )
    return full, pieces


def _six_training_clips(tmp_path: Path) -> Path:
    """Six synthetic clips, all in the train split (batch 2: 3 steps an epoch); returns the manifest."""
    from ecr.fixtures import synthesize

    manifest = synthesize(tmp_path / "clips", num_clips=6, labels="dfew", seed=1, size=64, duration=2.0)
    rows = [dict(json.loads(line), split="train") for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def _one_batch_into_epoch_1(full: list[dict]) -> int:
    """The kill step of the reported bug (the resumed run replayed the epoch's first batch)."""
    per_epoch = len(full) // 2
    assert per_epoch >= 3 and full[:per_epoch] != full[per_epoch:]  # reshuffled every epoch
    return per_epoch + 1


# ---------------------------------------------------------------------------------------------- SFT (demo)
def test_sft_demo_config_resumes_exactly_after_kill_9(tmp_path: Path) -> None:
    """`ecr fit --config configs/demo/sft.yaml … --ckpt_path last` after a kill -9 one batch into epoch 1."""
    from ecr.fixtures.tiny_models import build_tiny_omni

    tiny = build_tiny_omni(tmp_path / "tiny", hidden_size=64)
    manifest = _six_training_clips(tmp_path)

    def override(tmp: Path, records: Path, kill: tuple[int, str] | None = None) -> Path:
        config = {
            "model": {"init_args": {"policy": {"model": str(tiny)}}},
            "data": {"init_args": {"root": str(manifest.parent), "manifest": str(manifest), "batch_size": 2,
                                   "cache_dir": str(tmp_path / "cache"), "val_fraction": 0.0}},
            "trainer": {"max_epochs": 2, "limit_val_batches": 0, "default_root_dir": str(tmp / "runs"),
                        "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                   "init_args": {"save_dir": str(tmp / "runs"), "name": "tb"}},
                        "callbacks": _callbacks(records, kill)},
        }  # fmt: skip
        return _write(tmp / ("kill.yaml" if kill else "run.yaml"), config)

    full, pieces = _full_then_killed_and_resumed(
        tmp_path, CONFIGS / "demo" / "sft.yaml", override, _one_batch_into_epoch_1
    )
    assert len(full) == 6  # 6 clips, batch 2 -> 3 steps an epoch
    _assert_same_run(full, pieces)


# --------------------------------------------------------------------------------------------- GRPO (demo)
def _grpo_override(tiny: Path, manifest: Path, cache: Path, model: dict[str, Any]):  # noqa: ANN202
    """The override of configs/demo/grpo.yaml for the tiny policy on the six clips: `model` adds to its init_args
    (rewards, verifier, grpo settings); 8 new tokens, batch 2, 6 steps, a checkpoint every step."""

    def override(tmp: Path, records: Path, kill: tuple[int, str] | None = None) -> Path:
        config = {
            "model": {"init_args": {"policy": {"model": str(tiny)}, "sampling": {"max_new_tokens": 8}, **model}},
            "data": {"init_args": {"root": str(manifest.parent), "manifest": str(manifest), "batch_size": 2,
                                   "cache_dir": str(cache), "val_fraction": 0.0}},
            "trainer": {"max_steps": 6, "limit_val_batches": 0, "default_root_dir": str(tmp / "runs"),
                        "enable_progress_bar": False,
                        "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                   "init_args": {"save_dir": str(tmp / "runs"), "name": "tb"}},
                        "callbacks": _callbacks(records, kill)},
        }  # fmt: skip
        return _write(tmp / ("kill.yaml" if kill else "run.yaml"), config)

    return override


def test_grpo_demo_config_resumes_exactly_after_kill_9(tmp_path: Path) -> None:
    """`ecr fit --config configs/demo/grpo.yaml … --ckpt_path last` after a kill -9 one batch into epoch 1: the same
    batches, sampled rewards (the RNG state is in the checkpoint) and learning rates as an uninterrupted run."""
    from ecr.fixtures import build_tiny_classifier
    from ecr.fixtures.tiny_models import build_tiny_omni
    from ecr.labels import resolve_label_space

    tiny = build_tiny_omni(tmp_path / "tiny", hidden_size=64)
    verifier = build_tiny_classifier(tmp_path / "verifier", resolve_label_space("dfew"))
    manifest = _six_training_clips(tmp_path)

    model = {"verifier": str(verifier), "grpo": {"log_completions_every_n_steps": 2},
             "rewards": [{"name": "format"}, {"name": "explanation"},
                         {"name": "vowels", "function": "faults:vowel_share"}]}  # fmt: skip
    override = _grpo_override(tiny, manifest, tmp_path / "cache", model)
    full, pieces = _full_then_killed_and_resumed(
        tmp_path, CONFIGS / "demo" / "grpo.yaml", override, _one_batch_into_epoch_1
    )
    assert len(full) == 6  # 6 clips, batch 2 -> 3 steps an epoch
    assert len({r["loss"] for r in full}) == 6  # the logged mean reward differs at every step
    _assert_same_run(full, pieces)


def test_grpo_with_dynamic_sampling_resumes_exactly_after_kill_9(tmp_path: Path) -> None:
    """Dynamic sampling draws a varying number of prompt batches per step from the same resumable sampler: a run
    killed with kill -9 and resumed with `--ckpt_path last` draws the same batches (rounds, last ids, rewards)."""
    from ecr.fixtures.tiny_models import build_tiny_omni

    tiny = build_tiny_omni(tmp_path / "tiny", hidden_size=64)
    manifest = _six_training_clips(tmp_path)

    model = {
        "verifier": None,
        "rewards": [{"name": "vowels", "function": "faults:vowels_unless_calm"}],
        "grpo": {"dynamic_sampling": True, "max_resample_rounds": 2, "log_completions_every_n_steps": 0},
    }
    override = _grpo_override(tiny, manifest, tmp_path / "cache", model)
    full, pieces = _full_then_killed_and_resumed(tmp_path, CONFIGS / "demo" / "grpo.yaml", override, lambda f: 3)
    assert len(full) == 6 and any(r["rounds"] > 1 for r in full[:4])  # steps drew extra batches before the kill
    _assert_same_run(full, pieces)
    assert [r["rounds"] for r in pieces] == [r["rounds"] for r in full]


# ---------------------------------------------------------------------------------------------- ERV (demo)
@pytest.mark.slow
def test_erv_demo_config_resumes_exactly_after_kill_9(tmp_path: Path) -> None:
    words = {"happy": "smiles brightly", "sad": "cries quietly", "angry": "shouts in rage", "fear": "trembles"}
    rows = [
        {"text": f"She {w} {i}.", "labels": [label], "group": f"g{i}"} for i in range(12) for label, w in words.items()
    ]
    sentences = tmp_path / "sentences.jsonl"
    sentences.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    def override(tmp: Path, records: Path, kill: tuple[int, str] | None = None) -> Path:
        config = {
            "data": {"init_args": {"path": str(sentences), "batch_size": 8}},
            "trainer": {"max_epochs": 2, "accelerator": "cpu", "default_root_dir": str(tmp / "runs"),
                        "enable_progress_bar": False, "num_sanity_val_steps": 0,
                        "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                   "init_args": {"save_dir": str(tmp / "runs")}},
                        "callbacks": _callbacks(records, kill)},
        }  # fmt: skip
        return _write(tmp / ("kill.yaml" if kill else "run.yaml"), config)

    full, pieces = _full_then_killed_and_resumed(
        tmp_path, CONFIGS / "demo" / "erv.yaml", override, _one_batch_into_epoch_1
    )
    _assert_same_run(full, pieces)
