"""The README's main job end to end: the stages of configs/demo/pipeline.yaml (what scripts/demo.sh runs).

The stage commands are read from the pipeline file itself (so this test follows it; the step list of
docs/demo.md must match it) and run in a temporary working directory: the demo configs' relative paths
(demo_data/..., runs/...) land there. The fast test runs the verifier half in-process with `ecr.cli.main` (a small
dataset, the label and ERV stages, with the synthetic explanations standing in for the SFT policy's own); the slow
test runs the whole chain through `ecr pipeline` in a subprocess, as users do, then again to see every stage
skipped, and then the exploration notebook on its outputs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ecr.cli import EXTRA_COMMANDS, main
from ecr.export import read_checkpoint
from ecr.labels import DFEW_LABELS
from ecr.models.registry import load_policy
from ecr.models.verifier import load_verifier
from ecr.pipeline import load_pipeline

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / "configs" / "demo" / "pipeline.yaml"
DEMO_PAGE = REPO / "docs" / "demo.md"
NOTEBOOK = REPO / "notebooks" / "explore_explanations.ipynb"
QUIET = ["--trainer.enable_progress_bar", "false"]


def ecr_lines(text: str) -> list[list[str]]:
    """The arguments of every `ecr ...` shell line of `text` (continuations joined, comments dropped)."""
    lines = (line.strip() for line in text.replace("\\\n", " ").splitlines())
    return [shlex.split(line, comments=True)[1:] for line in lines if line.startswith("ecr ")]


def page_demo_commands(page: Path = DEMO_PAGE) -> list[list[str]]:
    """The `ecr` lines of docs/demo.md's step list (the code block after "The demo runs these steps")."""
    section = page.read_text().split("The demo runs these steps", 1)[1]
    return ecr_lines(section.split("```bash", 1)[1].split("```", 1)[0])


def demo_commands(pipeline: Path = PIPELINE) -> dict[str, list[str]]:
    """Each stage's `ecr ...` arguments by stage name, with `configs/...` made absolute."""
    return {
        s.name: [str(REPO / a) if a.startswith("configs/") else a for a in s.argv[1:]]
        for s in load_pipeline(pipeline).stages
    }


def with_option(argv: list[str], option: str, value: str) -> list[str]:
    """`argv` with the value of an existing `--option` replaced (the option must be in the stage)."""
    i = argv.index(option)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


def run_ecr(argv: list[str]) -> None:
    """`ecr ARGV` in-process. Utility commands exit with their code (which must be 0); fits return."""
    if argv[0] in EXTRA_COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0, f"ecr {shlex.join(argv)} exited with {exit_info.value.code}"
    else:
        main(argv)


def run_notebook(path: Path = NOTEBOOK) -> dict[str, Any]:
    """Execute the notebook's code cells in order in one namespace (as a kernel would) and return it."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    assert cells, f"{path} has no code cells"
    for i, cell in enumerate(cells):
        exec(compile("".join(cell["source"]), f"{path.name}:code cell {i}", "exec"), namespace)  # noqa: S102
    return namespace


def scalar_tags(logdir: Path) -> set[str]:
    """Scalar tags of every TensorBoard event file under `logdir` (asserts there is one)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(logdir.rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file under {logdir}"
    tags: set[str] = set()
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


@pytest.fixture
def demo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working directory for the demo, one torch thread (shared 2-core machine), a clean sys.argv."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["ecr"])  # LightningCLI also looks at sys.argv
    yield tmp_path
    torch.set_num_threads(threads)


def check_data_and_labels(root: Path, num_clips: int) -> None:
    """What `ecr data synth` and `ecr label` leave behind: a manifest with inconsistent rows, labelled sentences."""
    rows = [json.loads(line) for line in (root / "demo_data/synth/manifest.jsonl").read_text().splitlines()]
    assert len(rows) == num_clips and all((root / "demo_data/synth" / r["video"]).is_file() for r in rows)
    assert {True, False} == {r["explanation_consistent"] for r in rows}
    sentences = [json.loads(line) for line in (root / "demo_data/erv/sentences.jsonl").read_text().splitlines()]
    assert sentences and all(r["text"] and set(r["labels"]) <= {*DFEW_LABELS, "neutral"} for r in sentences)
    summary = json.loads((root / "demo_data/erv/sentences.jsonl.summary.json").read_text())
    assert summary["written"] == len(sentences)


def check_verifier(root: Path) -> float:
    """The ERV fit's TensorBoard scalars and exported verifier folder; returns the verifier's threshold."""
    tags = scalar_tags(root / "runs/demo_erv/tb")
    assert {"train/loss", "val/loss", "val/macro_f1", "val/threshold"} <= tags, tags
    assert list((root / "runs/demo_erv/tb").rglob("checkpoints/erv-*.ckpt")), "no best ERV checkpoint"
    folder = root / "runs/demo_erv/verifier"
    meta = json.loads((folder / "erv.json").read_text())
    verifier = load_verifier(folder)
    assert verifier.label_names == meta["label_names"] and set(DFEW_LABELS) <= set(verifier.label_names)
    probs = verifier.probs(["She is smiling broadly.", "Tears run down his face."])  # [2, C]
    assert probs.shape == (2, len(verifier.label_names)) and bool(((probs >= 0) & (probs <= 1)).all())
    return float(meta["threshold"])


def check_notebook(namespace: dict[str, Any], num_clips: int, threshold: float) -> None:
    """The notebook read the demo outputs, and the verifier's reward separates consistent explanations."""
    assert namespace["ROOT"] == Path.cwd()
    assert len(namespace["rows"]) == num_clips
    assert namespace["reward"].threshold == pytest.approx(threshold)
    by_consistency = namespace["rewards_by_consistency"]
    assert set(by_consistency) == {True, False} and all(0.0 <= v <= 1.0 for v in by_consistency.values())
    plain, strict = namespace["plain_stats"], namespace["strict_stats"]  # the gaming cell
    assert plain["n_sentences"] == [5.0] and plain["duplicate_fraction"] == [pytest.approx(0.8)]  # 1 - 1/5
    assert strict["n_sentences"] == [1.0] and strict["duplicate_fraction"] == [pytest.approx(0.8)]  # deduped
    # what the GRPO stage optimises: reference explanations that fit the label score clearly higher
    assert by_consistency[True] > by_consistency[False] + 0.2, by_consistency


def run_pipeline_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`ecr pipeline --file configs/demo/pipeline.yaml ARGS` in `cwd` (a subprocess, output captured)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    argv = [sys.executable, "-c", "from ecr.cli import main; main()", "pipeline", "--file", str(PIPELINE), *args]
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


@pytest.mark.slow
def test_the_whole_demo_pipeline_then_every_stage_skipped_then_the_notebook(demo_dir: Path) -> None:
    (demo_dir / "configs").symlink_to(REPO / "configs")  # the stages name configs/demo/... relative to the cwd
    first = run_pipeline_cli(demo_dir)
    stages = list(demo_commands())
    assert first.stdout.count("runs (never ran)") == len(stages), first.stdout
    num_clips = int(demo_commands()["synth"][demo_commands()["synth"].index("--num-clips") + 1])
    rows = [json.loads(line) for line in (demo_dir / "demo_data/synth/manifest.jsonl").read_text().splitlines()]
    assert len(rows) == num_clips and {True, False} == {r["explanation_consistent"] for r in rows}
    own = [json.loads(line) for line in (demo_dir / "runs/demo_explain/predictions.jsonl").read_text().splitlines()]
    assert len(own) == sum(r["split"] == "train" for r in rows)  # the SFT policy explained every training clip
    threshold = check_verifier(demo_dir)
    assert {"train/loss", "val/loss", "lr"} <= scalar_tags(demo_dir / "runs/demo_sft")
    grpo_tags = scalar_tags(demo_dir / "runs/demo_grpo")
    assert any(t.startswith("train/reward") for t in grpo_tags), grpo_tags
    config, trained = read_checkpoint(demo_dir / "runs/demo_sft/tb/version_0/checkpoints/last.ckpt")
    exported = load_policy(dataclasses.replace(config, model="runs/demo_sft/export/merged")).model.state_dict()
    for name, tensor in trained.items():  # the exported SFT policy is the trained one
        torch.testing.assert_close(exported[name], tensor, msg=lambda m, name=name: f"{name}: {m}")
    for run in ("demo_predict", "demo_predict_grpo"):
        metrics = json.loads((demo_dir / f"runs/{run}/metrics.json").read_text())
        assert 0.0 <= metrics["war"] <= 1.0 and metrics["n"] == sum(r["split"] == "test" for r in rows)
    assert "WAR" in first.stdout and "GRPO" in first.stdout  # the summary table

    second = run_pipeline_cli(demo_dir)
    assert second.stdout.count("up to date, skipped") == len(stages), second.stdout

    page = (demo_dir / "runs/demo_report/index.html").read_text()
    assert "SFT" in page and "GRPO" in page and "report:" in first.stdout

    namespace = run_notebook()
    check_notebook(namespace, num_clips, threshold)
    assert namespace["have_predictions"] and namespace["metrics"]["n"] == sum(r["split"] == "test" for r in rows)


def test_the_demo_page_lists_the_demo_pipeline_stages() -> None:
    listed = page_demo_commands()
    stages = [s.argv[1:] for s in load_pipeline(PIPELINE).stages]
    assert listed == stages, "docs/demo.md's step list differs from configs/demo/pipeline.yaml"


def test_demo_verifier_half(demo_dir: Path) -> None:
    """Fast variant: synth (16 clips), check, label (the synthetic explanations in place of the SFT policy's own)
    and the ERV fit (3 epochs) of the demo pipeline."""
    steps = demo_commands()
    run_ecr(with_option(steps["synth"], "--num-clips", "16"))
    run_ecr(steps["check"])
    run_ecr([*with_option(steps["label"], "--input", "demo_data/synth/manifest.jsonl"), "--splits", "[train, val]"])
    check_data_and_labels(demo_dir, 16)
    run_ecr([*steps["erv"], "--trainer.max_epochs", "3", *QUIET])
    check_verifier(demo_dir)
