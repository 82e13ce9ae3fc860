"""Errors a user caused print as one or two lines naming the file/field, exit 2, no traceback (utility commands
and `ecr fit`); `--debug` / `ECR_DEBUG=1` show the traceback; real bugs keep theirs. A nonexistent data root is
reported at DataModule setup, before the model loads (here the model folder does not exist either). An OSError
about a path the user named (an output folder that cannot be created, a file where a folder must be, a folder
where a file must be) is a user error too; an OSError about a path the program chose keeps its traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from faults import run_ecr

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SFT = str(CONFIGS / "demo" / "sft.yaml")


def _cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (ecr arguments, text the error line must contain)."""
    manifest = tmp / "m.jsonl"
    row = {"video": "a.mp4", "label": "happy", "explanation": "She smiles."}  # SFT's data needs: the model error
    manifest.write_text(json.dumps(row) + "\n", encoding="utf-8")
    texts = tmp / "texts.jsonl"
    texts.write_text(json.dumps({"text": "I am so happy today."}) + "\n", encoding="utf-8")
    a_file = tmp / "a_file"
    a_file.write_text("not a folder", encoding="utf-8")
    (tmp / "a_dir").mkdir(exist_ok=True)
    return {
        "data check: missing root": (
            ["data", "check", "--root", str(tmp / "nope"), "--manifest", str(manifest), "--format", "custom",
             "--labels", "dfew"], "data.root",
        ),
        "label: missing input": (
            ["label", "--input", str(tmp / "none.jsonl"), "--output", str(tmp / "o.jsonl"), "--teacher", "lexicon",
             "--labels", "dfew"], "none.jsonl",
        ),
        "export: missing checkpoint": (
            ["export", "--checkpoint", str(tmp / "x.ckpt"), "--out", str(tmp / "e")], "x.ckpt",
        ),
        "fit: missing data root, before the (missing) model loads": (
            ["fit", "--config", SFT, "--model.init_args.policy.model", str(tmp / "no_model"),
             "--data.init_args.root", str(tmp / "nope"), "--data.init_args.manifest", str(manifest)], "data.root",
        ),
        "fit: missing model folder": (
            ["fit", "--config", SFT, "--model.init_args.policy.model", str(tmp / "no_model"),
             "--data.init_args.root", str(tmp), "--data.init_args.manifest", str(manifest)], "no_model",
        ),
        "fit: missing manifest": (
            ["fit", "--config", SFT, "--data.init_args.root", str(tmp), "--data.init_args.manifest",
             str(tmp / "gone.jsonl")], "gone.jsonl",
        ),
        "model tiny: output folder cannot be created": (
            ["model", "tiny", "--out", "/proc/ecr-no-such/tiny"], "/proc/ecr-no-such",
        ),
        "model tiny: output under a file": (
            ["model", "tiny", "--out", str(a_file / "tiny")], str(a_file / "tiny"),
        ),
        "data synth: output under a file": (
            ["data", "synth", "--out", str(a_file), "--n", "2"], str(a_file),
        ),
        "label: output folder cannot be created": (
            ["label", "--input", str(texts), "--output", "/proc/ecr-no-such/out.jsonl", "--teacher", "lexicon",
             "--labels", "dfew"], "/proc/ecr-no-such",
        ),
        "label: output is a folder": (
            ["label", "--input", str(texts), "--output", str(tmp / "a_dir"), "--teacher", "lexicon",
             "--labels", "dfew"], str(tmp / "a_dir"),
        ),
    }  # fmt: skip


OS_ERROR_CASES = [
    "model tiny: output folder cannot be created",
    "model tiny: output under a file",
    "data synth: output under a file",
    "label: output folder cannot be created",
    "label: output is a folder",
]

CASES = [
    "data check: missing root",
    "label: missing input",
    "export: missing checkpoint",
    "fit: missing data root, before the (missing) model loads",
    "fit: missing model folder",
    "fit: missing manifest",
    *OS_ERROR_CASES,
]


@pytest.mark.parametrize("name", CASES)
def test_user_error_is_short_with_exit_code_2(tmp_path: Path, name: str) -> None:
    args, expected = _cases(tmp_path)[name]
    proc = run_ecr(args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ecr") and "error" in line]
    assert len(errors) == 1 and expected in errors[0], proc.stderr[-3000:]


@pytest.mark.parametrize("how", ["--debug", "ECR_DEBUG=1"])
def test_debug_shows_the_traceback_of_a_user_error(tmp_path: Path, how: str) -> None:
    args, expected = _cases(tmp_path)["export: missing checkpoint" if how == "--debug" else "fit: missing manifest"]
    env = {"ECR_DEBUG": "1"} if how == "ECR_DEBUG=1" else None
    proc = run_ecr([*args, "--debug"] if how == "--debug" else args, cwd=tmp_path, env=env)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and expected in proc.stderr


def test_a_real_bug_keeps_its_traceback(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": "a", "label": "happy", "explanation": "x."}) + "\n", encoding="utf-8")
    proc = run_ecr(
        ["fit", "--model", "faults.BuggyStage", "--data", "ecr.data.TextDataModule", "--data.manifest", str(rows),
         "--trainer.logger", "false", "--trainer.accelerator", "cpu"],
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "deliberate bug in BuggyStage.setup" in proc.stderr


@pytest.mark.parametrize("how", ["--debug", "ECR_DEBUG=1"])
def test_debug_shows_the_traceback_of_an_os_error_on_a_user_path(tmp_path: Path, how: str) -> None:
    args, _ = _cases(tmp_path)["model tiny: output under a file"]
    env = {"ECR_DEBUG": "1"} if how == "ECR_DEBUG=1" else None
    proc = run_ecr([*args, "--debug"] if how == "--debug" else args, cwd=tmp_path, env=env)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "NotADirectoryError" in proc.stderr


def test_an_os_error_on_a_path_the_program_chose_keeps_its_traceback(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": "a", "label": "happy", "explanation": "x."}) + "\n", encoding="utf-8")
    proc = run_ecr(
        ["fit", "--model", "faults.OSErrorBugStage", "--data", "ecr.data.TextDataModule", "--data.manifest",
         str(rows), "--trainer.logger", "false", "--trainer.accelerator", "cpu"],
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "no-such-internal-file.bin" in proc.stderr
