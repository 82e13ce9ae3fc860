"""The README's main job end to end: the `ecr` steps of scripts/demo.sh, then the exploration notebook.

The commands are parsed from scripts/demo.sh itself (so this test follows the script; the README's step list
must match it, plus its `ecr export` line) and run in-process with `ecr.cli.main` in a temporary working
directory: the demo configs' relative paths (demo_data/..., runs/...) land there. Training is shortened with
CLI overrides. The notebook's code cells then run in that directory and the namespace they leave is checked.
The slow test is the whole demo; the fast one is its verifier half (a small dataset, the ERV fit, the
notebook), so the default suite notices a broken script or notebook too.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
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

REPO = Path(__file__).resolve().parents[2]
DEMO_SCRIPT = REPO / "scripts" / "demo.sh"
README = REPO / "README.md"
NOTEBOOK = REPO / "notebooks" / "explore_explanations.ipynb"
STEPS = ["data synth", "data check", "model tiny", "label", "fit erv", "fit sft"]  # the script's order
QUIET = ["--trainer.enable_progress_bar", "false"]


def ecr_lines(text: str) -> list[list[str]]:
    """The arguments of every `ecr ...` shell line of `text` (continuations joined, comments dropped)."""
    lines = (line.strip() for line in text.replace("\\\n", " ").splitlines())
    return [shlex.split(line, comments=True)[1:] for line in lines if line.startswith("ecr ")]


def readme_demo_commands(readme: Path = README) -> list[list[str]]:
    """The `ecr` lines of the README's demo step list (the code block after "The demo runs these steps")."""
    section = readme.read_text().split("The demo runs these steps", 1)[1]
    return ecr_lines(section.split("```bash", 1)[1].split("```", 1)[0])


def demo_commands(script: Path = DEMO_SCRIPT) -> dict[str, list[str]]:
    """The script's `ecr ...` command lines by step name (see STEPS), with `configs/...` made absolute."""
    commands: dict[str, list[str]] = {}
    for raw in ecr_lines(script.read_text()):
        argv = [str(REPO / a) if a.startswith("configs/") else a for a in raw]
        name = " ".join(argv[:2]) if argv[0] in ("data", "model") else argv[0]
        if name == "fit":
            name += " " + Path(argv[argv.index("--config") + 1]).stem
        commands[name] = argv
    assert list(commands) == STEPS, f"{script} changed its steps: {list(commands)}; update this test"
    return commands


def with_option(argv: list[str], option: str, value: str) -> list[str]:
    """`argv` with the value of an existing `--option` replaced (the option must be in the script)."""
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
    tags = scalar_tags(root / "runs/demo/erv")
    assert {"train/loss", "val/loss", "val/macro_f1", "val/threshold"} <= tags, tags
    assert list((root / "runs/demo/erv").rglob("checkpoints/erv-*.ckpt")), "no best ERV checkpoint"
    folder = root / "runs/demo/erv/verifier"
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


@pytest.mark.slow
def test_demo_script_and_notebook_end_to_end(demo_dir: Path) -> None:
    steps = demo_commands()
    num_clips = int(steps["data synth"][steps["data synth"].index("--num-clips") + 1])
    for name in ("data synth", "data check", "model tiny", "label"):
        run_ecr(steps[name])
    assert (demo_dir / "demo_data/tiny_omni/model.safetensors").is_file()
    check_data_and_labels(demo_dir, num_clips)

    run_ecr([*steps["fit erv"], "--trainer.max_epochs", "3", *QUIET])
    threshold = check_verifier(demo_dir)

    run_ecr([*steps["fit sft"], "--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "1"])
    tags = scalar_tags(demo_dir / "runs/demo_sft")
    assert {"train/loss", "val/loss", "lr"} <= tags and any(t.endswith("items_per_sec") for t in tags), tags
    export = readme_demo_commands()[-1]  # the README's `ecr export` line, with its checkpoint path
    assert export[0] == "export", export
    last = Path(export[export.index("--checkpoint") + 1])
    assert last.is_file(), f"the README's checkpoint {last} was not written; found {list(Path().rglob('*.ckpt'))}"
    run_ecr(export)
    out = Path(export[export.index("--out") + 1])
    assert not (out / "adapter").exists()  # a full fine-tune (no LoRA) exports a plain model folder
    config, trained = read_checkpoint(last)  # the trained (unfrozen) tensors
    base = load_policy(config).model.state_dict()  # demo_data/tiny_omni
    assert any(not torch.equal(base[name], tensor) for name, tensor in trained.items()), "SFT changed nothing"
    exported = load_policy(dataclasses.replace(config, model=str(out / "merged"))).model.state_dict()
    for name, tensor in trained.items():  # reloaded through the same policy loader a later stage uses
        torch.testing.assert_close(exported[name], tensor, msg=lambda m, name=name: f"{name}: {m}")

    check_notebook(run_notebook(), num_clips, threshold)


def test_readme_lists_the_demo_script_steps() -> None:
    readme = readme_demo_commands()
    script = ecr_lines(DEMO_SCRIPT.read_text())
    assert readme[: len(script)] == script and [c[0] for c in readme[len(script) :]] == ["export"], readme


def test_demo_verifier_half_and_notebook(demo_dir: Path) -> None:
    """Fast variant: the script's synth (16 clips), check, label and ERV fit (3 epochs) steps, then the notebook."""
    steps = demo_commands()
    run_ecr(with_option(steps["data synth"], "--num-clips", "16"))
    run_ecr(steps["data check"])
    run_ecr(steps["label"])
    check_data_and_labels(demo_dir, 16)
    run_ecr([*steps["fit erv"], "--trainer.max_epochs", "3", *QUIET])
    check_notebook(run_notebook(), 16, check_verifier(demo_dir))
