"""Your own dataset, end to end: the README's "Your own data" commands, run exactly as written, in subprocesses.

A label set that is not built in (calm, excited, bored, tense), a manifest with only `video` and `label`, no YAML
edited by anyone: check → explanations bootstrapped (`ecr explain`) → SFT → the SFT policy's explanations
labelled → ERV → GRPO → predict → score → report. Slow (about 8 minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LABELS = ["calm", "excited", "bored", "tense"]


def readme_commands(readme: Path = REPO / "README.md") -> list[str]:
    """The commands of the README's own-data block (comments dropped, `\\` continuations joined)."""
    text = readme.read_text(encoding="utf-8")
    section = text.split("<!-- own-data:begin -->", 1)[1].split("<!-- own-data:end -->", 1)[0]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_the_readme_block_is_a_list_of_ecr_commands() -> None:
    commands = readme_commands()
    assert commands and all(shlex.split(c)[0] == "ecr" for c in commands), commands
    assert any(c.startswith("ecr init --manifest data/mine/") for c in commands)
    assert commands[-1] == "ecr pipeline runs/mine/pipeline.yaml"


@pytest.mark.slow
def test_the_readme_own_data_commands_run_end_to_end(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("ecr")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ECR_CACHE": str(tmp_path / "cache")}
    env["PATH"] = f"{script.parent}{os.pathsep}{env.get('PATH', '')}"
    for command in readme_commands():
        result = subprocess.run(shlex.split(command), cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=1800)  # fmt: skip
        out = result.stdout + result.stderr
        assert result.returncode == 0, f"{command}\n{out[-4000:]}"
        assert "Traceback" not in out, f"{command}\n{out[-4000:]}"
    run = tmp_path / "runs" / "mine"
    rows = [json.loads(line) for line in (tmp_path / "data/mine/manifest.jsonl").read_text().splitlines()]
    assert all(set(r) == {"video", "label"} for r in rows)  # no explanations to start from
    # explanations were bootstrapped and filtered, and SFT trained on them
    summary = json.loads((run / "bootstrap/sft_manifest.jsonl.summary.json").read_text())
    kept = [json.loads(line) for line in (run / "bootstrap/sft_manifest.jsonl").read_text().splitlines()]
    assert summary["kept"] == len(kept) > 0 and all(k["explanation"] and k["label"] in LABELS for k in kept)
    # the verifier speaks the custom label set, and was trained on the SFT policy's pseudo-labelled sentences
    meta = json.loads((run / "erv/verifier/erv.json").read_text())
    assert set(LABELS) <= set(meta["label_names"]), meta["label_names"]
    sentences = [json.loads(line) for line in (run / "erv/sentences.jsonl").read_text().splitlines()]
    assert {lbl for s in sentences for lbl in s["labels"]} & set(LABELS)
    # both policies predicted and were scored on the same held-out clips; the report holds both
    for name in ("predict", "predict_grpo"):
        metrics = json.loads((run / name / "metrics.json").read_text())
        assert metrics["n"] > 0 and metrics["war"] is not None and metrics["epc"] is not None, metrics
        predictions = (run / name / "predictions.jsonl").read_text().splitlines()
        assert len(predictions) == metrics["n"]
    assert list((run / "grpo").rglob("last.ckpt")) and list((run / "grpo").rglob("events.out.tfevents.*"))
    assert (run / "report/index.html").is_file()
