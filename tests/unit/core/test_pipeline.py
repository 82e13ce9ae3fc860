"""`ecr pipeline`: stale stages run, up-to-date ones are skipped (and say so), a failure stops the chain.

Run through the CLI in a subprocess, as users run it; the stages are small Python commands writing files, so
the rules are tested without training anything (the demo pipeline itself runs in the integration tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ecr.errors import ConfigError
from ecr.pipeline import Stage, load_pipeline, stale_reason

REPO = Path(__file__).resolve().parents[3]


def _write(tmp: Path, stages: list[dict], **extra: object) -> Path:
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"stages": stages, **extra}))
    return path


def _py(code: str) -> str:
    """A stage command: this interpreter running `code` (quoted for shlex)."""
    return f"{sys.executable} -c {json.dumps(code)}"


def _copy(src: str, dst: str, tag: str) -> dict:
    code = f"import pathlib; pathlib.Path('{dst}').write_text(pathlib.Path('{src}').read_text() + '{tag}')"
    return {"name": tag, "run": _py(code), "inputs": [src], "outputs": [dst]}


def _run(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    argv = [sys.executable, "-c", "from ecr.cli import main; main()", "pipeline", *args]
    return subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True, timeout=120)


def _chain(tmp: Path) -> Path:
    (tmp / "a.txt").write_text("a")
    return _write(tmp, [_copy("a.txt", "b.txt", "B"), _copy("b.txt", "c.txt", "C")])


def test_second_run_skips_up_to_date_stages_and_an_edited_input_reruns_downstream(tmp_path: Path) -> None:
    pipeline = _chain(tmp_path)
    first = _run(tmp_path, "--file", str(pipeline))
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "c.txt").read_text() == "aBC"
    assert first.stdout.count("runs (never ran)") == 2

    second = _run(tmp_path, "--file", str(pipeline))
    assert second.returncode == 0 and second.stdout.count("up to date, skipped") == 2, second.stdout

    time.sleep(0.05)
    (tmp_path / "b.txt").write_text("x")  # an edited intermediate file: only the stage that reads it reruns
    third = _run(tmp_path, "--file", str(pipeline))
    assert "1/2 B\n    up to date" in third.stdout  # B's input a.txt did not change; its output was edited
    assert "2/2 C\n    runs (an input is newer than its last run)" in third.stdout
    assert (tmp_path / "c.txt").read_text() == "xC"

    time.sleep(0.05)
    (tmp_path / "a.txt").write_text("z")
    fourth = _run(tmp_path, "--file", str(pipeline))
    assert fourth.stdout.count("runs (an input is newer") == 2  # B reruns, so C (reading b.txt) reruns too
    assert (tmp_path / "c.txt").read_text() == "zBC"


def test_force_reruns_a_stage_and_a_changed_command_reruns_it(tmp_path: Path) -> None:
    pipeline = _chain(tmp_path)
    assert _run(tmp_path, "--file", str(pipeline)).returncode == 0
    forced = _run(tmp_path, "--file", str(pipeline), "--force", "[B]")
    assert "1/2 B\n    runs (forced)" in forced.stdout and "2/2 C\n    runs (an input is newer" in forced.stdout
    stages = yaml.safe_load(pipeline.read_text())["stages"]
    stages[1]["run"] += " # changed"
    pipeline.write_text(yaml.safe_dump({"stages": stages}))
    changed = _run(tmp_path, "--file", str(pipeline))
    assert "1/2 B\n    up to date" in changed.stdout and "runs (its command changed)" in changed.stdout
    bad = _run(tmp_path, "--file", str(pipeline), "--force", "[nope]")
    assert bad.returncode == 2 and "unknown stage(s) ['nope']" in bad.stderr


def test_a_failed_stage_stops_the_chain_and_keeps_earlier_outputs(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    fail = {"name": "broken", "run": _py("import sys; print('bad input: x.csv', file=sys.stderr); sys.exit(3)")}
    pipeline = _write(tmp_path, [_copy("a.txt", "b.txt", "B"), fail, _copy("b.txt", "c.txt", "C")])
    result = _run(tmp_path, "--file", str(pipeline))
    assert result.returncode == 3
    assert "bad input: x.csv" in result.stderr  # the stage's own message
    assert "stage 'broken' failed (exit 3); later stages were not run" in result.stderr
    assert (tmp_path / "b.txt").is_file() and not (tmp_path / "c.txt").exists()
    again = _run(tmp_path, "--file", str(pipeline))
    assert "1/3 B\n    up to date" in again.stdout and again.returncode == 3  # resumes at the failed stage


def test_clean_removes_a_stages_old_run_folder_before_it_runs(tmp_path: Path) -> None:
    (tmp_path / "runs/old").mkdir(parents=True)
    (tmp_path / "runs/old/version_0").mkdir()
    code = (
        "import pathlib; p = pathlib.Path('runs/old'); p.mkdir(exist_ok=True); "
        "(p / 'out').write_text(str(len(list(p.iterdir()))))"
    )
    pipeline = _write(tmp_path, [{"name": "fit", "run": _py(code), "outputs": ["runs/old/out"], "clean": ["runs/old"]}])
    assert _run(tmp_path, "--file", str(pipeline)).returncode == 0
    assert (tmp_path / "runs/old/out").read_text() == "0"  # the stale version_0 folder was gone first
    assert not (tmp_path / "runs/old/version_0").exists()


def test_config_files_of_a_command_are_inputs(tmp_path: Path) -> None:
    stage = Stage(name="fit", run="ecr fit --config configs/a.yaml --config configs/b.yaml", inputs=("x",))
    assert stage.all_inputs() == ["x", "configs/a.yaml", "configs/b.yaml"]
    assert stale_reason(stage, tmp_path) == "never ran"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("stages: []", "non-empty `stages:` list"),
        ("stages: [{name: a}]", "needs a `name` and a `run`"),
        ("stages: [{name: a, run: x, output: y}]", "unknown field(s) ['output']"),
        ("stages: [{name: a, run: x}, {name: a, run: y}]", "must be unique"),
        ("stages: [{name: a, run: x, clean: ../up}]", "relative folder inside"),
        ("stages: [{name: a, run: x, inputs: {a: 1}}]", "expected a path or a list"),
        ("stages: [", "not valid YAML"),
    ],
)
def test_bad_pipeline_files_name_the_file_and_field(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match="p.yaml") as err:
        load_pipeline(path)
    assert message in str(err.value)


def test_the_demo_pipeline_loads_and_its_stages_are_ecr_commands() -> None:
    pipeline = load_pipeline(REPO / "configs/demo/pipeline.yaml")
    assert all(s.argv[0] == "ecr" for s in pipeline.stages)
    for stage in pipeline.stages:
        for config in stage.all_inputs():
            if config.startswith("configs/"):
                assert (REPO / config).is_file(), f"{stage.name}: {config} does not exist"
    produced = {o for s in pipeline.stages for o in s.outputs}
    for k, stage in enumerate(pipeline.stages):  # every non-config input is made by an earlier stage
        earlier = {o for s in pipeline.stages[:k] for o in s.outputs}
        for path in stage.inputs:  # (an input folder holding an earlier output counts)
            made = any(o == path or Path(o).is_relative_to(path) for o in earlier)
            assert made, f"{stage.name}: input {path} is not an output of an earlier stage"
    assert set(pipeline.metrics.values()) <= produced


def test_summary_names_the_judge_and_shows_the_other_judges(tmp_path: Path) -> None:
    from ecr.pipeline import Pipeline, summary_lines

    def metrics(path: Path, epc: float, verifier_epc: float) -> str:
        rep = {"epc": verifier_epc, "eea": 0.5, "fcr": 0.25}
        path.write_text(json.dumps({"war": 1.0, "uar": 1.0, "epc": epc, "eea": 0.5, "fcr": 0.5,
                                    "judge": {"judge": "cue"}, "judges": {"cue": {}, "verifier": rep}}))  # fmt: skip
        return str(path)

    pipeline = Pipeline(
        (), {"SFT": metrics(tmp_path / "a.json", 0.6, 0.7), "GRPO": metrics(tmp_path / "b.json", 0.9, 0.8)}
    )
    text = "\n".join(summary_lines(pipeline, [("sft", "ran", 1.0)]))
    assert "(%; judge: cue)" in text and "SFT (verifier)" in text and "GRPO (verifier)" in text
    main = [line.split() for line in text.splitlines() if line.startswith(("SFT ", "GRPO ")) and "(" not in line]
    assert [row[3] for row in main] == ["60.0", "90.0"]  # EPC: the first judge's


def test_until_stops_after_the_named_stage_and_the_file_names_its_state_dir(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    stages = [_copy("a.txt", "b.txt", "B"), _copy("b.txt", "c.txt", "C")]
    pipeline = _write(tmp_path, stages, state_dir="runs/mine/.pipeline")
    first = _run(tmp_path, str(pipeline), "--until", "B")
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "b.txt").is_file() and not (tmp_path / "c.txt").exists()
    assert "=== 1/1 B" in first.stdout and "C" not in first.stdout.split("stage")[-1]
    assert (tmp_path / "runs/mine/.pipeline/B.done").is_file() and not (tmp_path / "runs/.pipeline").exists()
    rest = _run(tmp_path, str(pipeline))
    assert rest.returncode == 0 and "up to date, skipped" in rest.stdout and (tmp_path / "c.txt").is_file()
    bad = _run(tmp_path, str(pipeline), "--until", "nope")
    assert bad.returncode == 2 and "--until: unknown stage 'nope'" in bad.stderr and "Traceback" not in bad.stderr
