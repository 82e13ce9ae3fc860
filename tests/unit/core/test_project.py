"""`ecr init` (issue 18.4): one command writes a project's stage configs and pipeline, every output under one run
directory, for a custom label set; every config it writes builds through the `ecr` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ecr.cli import cli_main
from ecr.pipeline import load_pipeline

LABELS = ["calm", "excited", "bored", "tense"]
TEMPLATES = Path(__file__).resolve().parents[3] / "configs/demo"


def _manifest(folder: Path, explanations: bool) -> Path:
    folder.mkdir(parents=True)
    rows = [{"video": f"clips/c{i}.mp4", "label": LABELS[i % 4]} for i in range(8)]
    if explanations:
        rows = [dict(r, explanation=f"It looks {r['label']}.") for r in rows]
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("explanations", [False, True], ids=["labels_only", "with_explanations"])
def test_init_writes_a_pipeline_and_configs_under_one_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, explanations: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    _manifest(tmp_path / "data", explanations)
    script = Path(sys.executable).with_name("ecr")
    result = subprocess.run(
        [str(script), "init", "--manifest", "data/manifest.jsonl", "--labels", "[calm, excited, bored, tense]",
         "--model", "models/base", "--run", "runs/mine", "--templates", str(TEMPLATES)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    pipeline = load_pipeline("runs/mine/pipeline.yaml")
    names = [s.name for s in pipeline.stages]
    assert ("bootstrap" in names and "explain" in names) is not explanations
    assert names[-1] == "report" and {"sft", "erv", "grpo", "predict_sft", "predict_grpo"} <= set(names)
    for stage in pipeline.stages:  # every output of the project lands in the run directory
        assert all(p.startswith("runs/mine/") for p in stage.outputs), stage
        assert "version_0" not in stage.run and all(
            Path(c).is_file() for c in stage.all_inputs() if c.endswith(".yaml")
        )
    sft = yaml.safe_load(Path("runs/mine/configs/sft.yaml").read_text())
    want = "runs/mine/bootstrap/sft_manifest.jsonl" if not explanations else "data/manifest.jsonl"
    assert sft["data"]["init_args"]["manifest"] == want and sft["data"]["init_args"]["labels"] == LABELS
    assert sft["model"]["init_args"]["policy"]["model"] == "models/base"
    boot = yaml.safe_load(Path("runs/mine/configs/bootstrap.yaml").read_text())
    assert "{label}" in boot["model"]["init_args"]["policy"]["inputs"]["instruction"]
    assert boot["data"]["init_args"]["predict_split"] == "train"
    for config in sorted(Path("runs/mine/configs").glob("*.yaml")):
        text = config.read_text()
        assert "&id" not in text and "demo_data" not in text and "runs/demo" not in text, config
        if config.stem == "predict_grpo":  # reads the GRPO run's checkpoint when built: it exists after that stage
            continue
        cli = cli_main(["--config", str(config), "--trainer.logger", "false"], run=False)  # no weights load
        labels = getattr(cli.datamodule, "label_set", None)
        assert labels is None or list(labels.labels) == LABELS, config
