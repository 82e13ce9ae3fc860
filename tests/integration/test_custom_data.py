"""Issue 18, your own dataset: a label set that is not built in (calm, excited, bored, tense) and a manifest with
only `video` and `label`, through the `ecr` command line in subprocesses, as a new user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ecr.fixtures import synthesize

LABELS = ["calm", "excited", "bored", "tense"]
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def ecr(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """`ecr ARGS` in `cwd` through the installed console script (output captured)."""
    script = Path(sys.executable).with_name("ecr")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "ecr.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def plain_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 real clips labelled calm/excited/bored/tense; manifest rows hold `video` and `label` only."""
    root = tmp_path_factory.mktemp("custom")
    manifest = synthesize(root / "clips", num_clips=8, labels=LABELS, seed=0, size=32, duration=1.0)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    plain = root / "clips" / "plain.jsonl"
    plain.write_text("".join(json.dumps({"video": r["video"], "label": r["label"]}) + "\n" for r in rows))
    return root


def stage_config(root: Path, name: str, **data_args: object) -> Path:
    """A demo stage config pointed at the custom data (and at a model folder that does not exist)."""
    config = yaml.safe_load((CONFIGS / "demo" / f"{name}.yaml").read_text())
    config["data"]["init_args"].update(
        {"root": "clips", "manifest": "clips/plain.jsonl", "labels": LABELS, "cache_dir": None, **data_args}
    )
    config["model"]["init_args"]["policy"]["model"] = "no_such_model_folder"
    config["trainer"]["logger"] = False
    config["trainer"]["default_root_dir"] = "runs/x"
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_data_check_with_an_sft_config_reports_the_missing_explanations(plain_dataset: Path) -> None:
    config = stage_config(plain_dataset, "sft")
    result = ecr(["data", "check", "--config", str(config)], plain_dataset)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no_explanation" in result.stdout and "SFT trains on explanations" in result.stderr
    bad = [json.loads(line) for line in (plain_dataset / "data_check_bad_rows.jsonl").read_text().splitlines()]
    assert {b["reason"] for b in bad} == {"no_explanation"} and len(bad) == 7  # 8 rows, 1 held out for test
    # the same data under a GRPO config needs labels only: every row is usable
    result = ecr(["data", "check", "--config", str(stage_config(plain_dataset, "grpo"))], plain_dataset)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all 8 rows are usable" in result.stdout


def test_sft_fit_stops_with_one_line_before_loading_the_model(plain_dataset: Path) -> None:
    result = ecr(["fit", "--config", str(stage_config(plain_dataset, "sft"))], plain_dataset)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ecr fit: error:")]
    assert len(errors) == 1 and "SFT needs an explanation for every train/val clip: 7 of 7" in errors[0]
    assert "plain.jsonl:" in errors[0] and "no_such_model_folder" not in result.stderr  # checked before loading


def test_data_check_of_an_erv_config_prints_label_support_and_fails_on_an_unsupported_label(
    plain_dataset: Path,
) -> None:
    sentences = plain_dataset / "sentences.jsonl"
    rows = [{"text": f"s{i}", "labels": [lbl]} for i, lbl in enumerate(["calm", "calm", "excited", "neutral"])]
    sentences.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = yaml.safe_load((CONFIGS / "demo" / "erv.yaml").read_text())
    config["data"]["init_args"].update(path=str(sentences), labels=LABELS)
    path = plain_dataset / "erv.yaml"
    path.write_text(yaml.safe_dump(config))
    result = ecr(["data", "check", "--config", str(path)], plain_dataset)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "calm 2, excited 1, bored 0, tense 0, neutral 1" in result.stdout
    assert "['bored', 'tense'] have no sentence" in result.stderr


DESCRIPTIONS = [
    "She laughs with joy and delight.",
    "He is afraid of what comes next.",
    "Her voice is gloomy and full of grief.",
    "He shouts in anger.",
    "The room is quiet.",
    "He trusts the friendly voice.",
]
EMOTION_MAP = "{joy: excited, fear: tense, anger: tense, sadness: bored, trust: calm}"


def test_lexicon_teacher_warns_on_a_label_set_it_cannot_reach_and_takes_an_emotion_map(tmp_path: Path) -> None:
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in DESCRIPTIONS))
    labels = "[" + ", ".join(LABELS) + "]"
    plain = ecr(["label", "--input", "texts.jsonl", "--output", "a.jsonl", "--labels", labels], tmp_path)
    assert plain.returncode == 0, plain.stderr
    warnings = [line for line in plain.stderr.splitlines() if line.startswith("ecr label: WARNING:")]
    assert any("6 of 6 sentences (100 %) fell to neutral" in w for w in warnings), plain.stderr
    assert any("calm 0, excited 0, bored 0, tense 0, neutral 6" in w and "--emotion_map" in w for w in warnings)
    assert len(json.loads((tmp_path / "a.jsonl.summary.json").read_text())["warnings"]) == len(warnings) == 3
    mapped = ecr(
        ["label", "--input", "texts.jsonl", "--output", "b.jsonl", "--labels", labels, "--emotion_map", EMOTION_MAP],
        tmp_path,
    )
    assert mapped.returncode == 0 and "WARNING" not in mapped.stderr, mapped.stderr
    rows = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert set(LABELS) <= {lbl for r in rows for lbl in r["labels"]}
    bad = ecr(["label", "--input", "texts.jsonl", "--output", "c.jsonl", "--labels", labels,
               "--emotion_map", "{joy: happy}"], tmp_path)  # fmt: skip
    assert bad.returncode == 2 and "'joy'->'happy' is not in" in bad.stderr and "Traceback" not in bad.stderr


def test_explain_keeps_label_consistent_explanations_as_an_sft_manifest(plain_dataset: Path, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (plain_dataset / "clips/plain.jsonl").read_text().splitlines()]
    ids = [Path(r["video"]).stem for r in rows]
    other = {lbl: LABELS[(i + 1) % 4] for i, lbl in enumerate(LABELS)}
    completions = {  # what `ecr predict` (or an API teacher) wrote for the training clips, given their labels
        ids[0]: f"<think>The face is {rows[0]['label']}. Nothing moves.</think>\n<answer>{rows[0]['label']}</answer>",
        ids[1]: f"<think>The voice sounds {rows[1]['label']}.</think>\n<answer>{rows[1]['label']}</answer>",
        ids[2]: f"the person is {rows[2]['label']}",  # format
        ids[3]: f"<think>It is {rows[3]['label']}.</think>\n<answer>{other[rows[3]['label']]}</answer>",  # answer
        ids[4]: f"<think>It looks {other[rows[4]['label']]}.</think>\n<answer>{rows[4]['label']}</answer>",  # teacher
        ids[5]: f"<think>She sits there.</think>\n<answer>{rows[5]['label']}</answer>",  # teacher: all neutral
    }  # ids[6], ids[7]: no prediction
    predictions = tmp_path / "explain.jsonl"
    predictions.write_text("".join(json.dumps({"id": k, "completion": v}) + "\n" for k, v in completions.items()))
    labels = "[" + ", ".join(LABELS) + "]"
    out = plain_dataset / "clips/bootstrapped.jsonl"
    result = ecr(["explain", "--predictions", str(predictions), "--manifest", "clips/plain.jsonl",
                  "--output", str(out), "--labels", labels], plain_dataset)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rejected: no_prediction 2, format 1, answer 1, teacher 2" in result.stdout
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [k["id"] for k in kept] == ids[:2] and all(k["split"] == "train" for k in kept)
    assert kept[0]["explanation"] == f"The face is {rows[0]['label']}. Nothing moves." and kept[0]["video"]
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert summary["kept"] == 2 and summary["rejected"]["teacher"] == 2
    # the written manifest is what SFT needs: the check under the SFT config passes
    config = stage_config(plain_dataset, "sft", manifest="clips/bootstrapped.jsonl")
    check = ecr(["data", "check", "--config", str(config)], plain_dataset)
    assert check.returncode == 0 and "all 2 rows are usable" in check.stdout, check.stdout + check.stderr


@pytest.mark.slow
def test_grpo_straight_from_a_base_policy_on_labels_only(plain_dataset: Path) -> None:
    """Path (a) of docs/custom_data.md: no SFT, no explanations: GRPO from the (instruction-tuned) base model with
    the format and accuracy rewards; the prompt teaches the format, the format reward enforces it."""
    from ecr.fixtures.tiny_models import build_tiny_omni

    build_tiny_omni(plain_dataset / "base_omni", hidden_size=64)
    config = stage_config(plain_dataset, "grpo")
    result = ecr(
        ["fit", "--config", str(config), "--model.init_args.policy.model", "base_omni",
         "--model.init_args.verifier", "null", "--model.init_args.rewards", "[{name: format}, {name: accuracy}]",
         "--trainer.max_steps", "2", "--trainer.val_check_interval", "null", "--trainer.limit_val_batches", "0",
         "--model.init_args.sampling.max_new_tokens", "8", "--trainer.callbacks", "[]"],
        plain_dataset,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
