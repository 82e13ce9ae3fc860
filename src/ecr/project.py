"""`ecr init`: one place for a project's paths and labels — stage configs + a pipeline for your own dataset.

Reusing the demo configs on another dataset took five edits per stage (logger `save_dir`, the verifier export
folder, data paths, `task`, labels, the predictions output inside a callbacks list). `ecr init` writes them all
from a template set (`configs/demo`: the CPU-sized tiny-model stages; `configs`: the paper's GPU settings) for a
given data folder, manifest, label list and model, with every output under ONE run directory:

    <run>/configs/{bootstrap,sft,explain,erv,grpo,predict,predict_grpo}.yaml   <run>/pipeline.yaml
    <run>/{bootstrap,sft,explain,erv,grpo,predict,predict_grpo,report}/        logs, checkpoints, predictions

The pipeline is the documented path (docs/custom_data.md): check → (explanations bootstrapped with
`ecr explain` when the manifest has none) → SFT → export → SFT explains the training clips → `ecr label` →
ERV → GRPO → predict → score → report. Checkpoints are addressed by their run directory (`<run>/sft`), which
`ecr export`/`ecr predict` resolve to the newest version holding a checkpoint, never a hard-coded `version_0`.
"""

from __future__ import annotations

import copy
import json
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from ecr.errors import ConfigError, ECRError

Preset = Literal["demo", "full"]
BOOTSTRAP_INSTRUCTION = (
    "As an emotional recognition expert: the person in this video feels {label}. Explain which cues in the "
    "video and the voice show it.  Output the thinking process in <think> </think> and final emotion in "
    "<answer> </answer> tags."
)
TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {  # preset -> stage -> template files, stacked in order
    "demo": {
        "sft": ("sft.yaml",),
        "predict": ("predict.yaml",),
        "explain": ("predict.yaml", "explain.yaml"),
        "erv": ("erv.yaml",),
        "grpo": ("grpo.yaml",),
        "predict_grpo": ("predict.yaml", "predict_grpo.yaml"),
    },
    "full": {
        "sft": ("sft.yaml",),
        "predict": ("predict.yaml",),
        "explain": ("predict.yaml",),
        "erv": ("erv.yaml",),
        "grpo": ("grpo.yaml",),
        "predict_grpo": ("predict.yaml",),
    },
}


class _Dumper(yaml.SafeDumper):
    """Plain YAML (no `&id001` anchors where one list, e.g. the labels, appears in several places)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of two config dicts as `--config a --config b` stacks them (mappings merge, the rest replaces)."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else copy.deepcopy(v)
    return out


def template_dir(preset: Preset) -> Path:
    """`configs/demo` or `configs` of this checkout (the working directory first, then beside the package)."""
    rel = Path("configs/demo" if preset == "demo" else "configs")
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (base / rel / "sft.yaml").is_file():
            return base / rel
    raise ConfigError(f"ecr init: template folder {rel} not found (run it from the ecr checkout, or pass --templates)")


def _load(folder: Path, names: tuple[str, ...]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for name in names:
        config = merge(config, yaml.safe_load((folder / name).read_text(encoding="utf-8")) or {})
    return config


def _logs_to(config: dict[str, Any], folder: str) -> None:
    """Point the trainer's logger and default_root_dir at `folder` (TensorBoard in `<folder>/tb/version_N`)."""
    trainer = config.setdefault("trainer", {})
    trainer["default_root_dir"] = folder
    trainer["logger"] = {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": folder, "name": "tb", "default_hp_metric": False},  # no `hp_metric = -1`
    }


def _callback_args(config: dict[str, Any], suffix: str) -> dict[str, Any] | None:
    for cb in config.get("trainer", {}).get("callbacks") or []:
        if isinstance(cb, dict) and str(cb.get("class_path", "")).endswith(suffix):
            return cb.setdefault("init_args", {})
    return None


def stage_configs(
    templates: Path,
    preset: Preset,
    *,
    run: str,
    root: str,
    manifest: str,
    labels: list[str] | str,
    model: str,
    sft_manifest: str,
) -> dict[str, dict[str, Any]]:
    """Every stage config of a project (pure: template dicts in, project dicts out; see module docstring)."""
    out: dict[str, dict[str, Any]] = {}
    data = {"root": root, "manifest": manifest, "labels": labels, "cache_dir": f"{run}/cache"}
    merged = f"{run}/sft/export/merged"
    verifier = f"{run}/erv/verifier"
    for stage, names in TEMPLATES[preset].items():
        config = _load(templates, names)
        if stage != "erv":
            config["data"]["init_args"].update(data)
        _logs_to(config, f"{run}/{stage}")
        init = config["model"].setdefault("init_args", {})
        if writer := _callback_args(config, "PredictionWriter"):
            writer["output"] = f"{run}/{stage}/predictions.jsonl"
        if stage == "sft":
            init["policy"]["model"] = model
            config["data"]["init_args"]["manifest"] = sft_manifest
        elif stage in ("predict", "grpo"):
            init["policy"]["model"] = merged
            init["verifier"] = verifier
        elif stage == "explain":
            init["policy"]["model"] = merged
            init["verifier"] = None
            config["data"]["init_args"]["predict_split"] = "train"
        elif stage == "predict_grpo":
            init.update(policy=None, checkpoint=f"{run}/grpo", verifier=verifier)
        elif stage == "erv":
            init["task"] = labels
            config["data"]["init_args"].update(path=f"{run}/erv/sentences.jsonl", labels=labels)
            if export := _callback_args(config, "ExportVerifier"):
                export["dirpath"] = verifier
        out[stage] = config
    bootstrap = merge(out["explain"], {"model": {"init_args": {"policy": {"model": model}}}})
    bootstrap["model"]["init_args"]["policy"].setdefault("inputs", {})["instruction"] = BOOTSTRAP_INSTRUCTION
    # greedy: SFT data should be the base policy's most likely explanation, not a T = 1 draw (the explain
    # stage samples on purpose: the verifier must see the trained policy's spread of sentences)
    bootstrap["model"]["init_args"]["generation"] = {**bootstrap["model"]["init_args"].get("generation", {}),
                                                     "do_sample": False, "temperature": 1.0}  # fmt: skip
    _logs_to(bootstrap, f"{run}/bootstrap")
    if writer := _callback_args(bootstrap, "PredictionWriter"):
        writer["output"] = f"{run}/bootstrap/predictions.jsonl"
    out["bootstrap"] = bootstrap
    return out


def _bootstrap_stages(run: str, manifest: str, root: str, label_args: str, config: str) -> list[dict[str, Any]]:
    """The base policy explains the training clips given their labels; `ecr explain` keeps the good ones."""
    sft_manifest = f"{run}/bootstrap/sft_manifest.jsonl"
    return [
        {"name": "bootstrap", "about": "the base policy explains each training clip GIVEN its label",
         "run": f"ecr predict --config {config}", "inputs": [manifest],
         "outputs": [f"{run}/bootstrap/predictions.jsonl"], "clean": [f"{run}/bootstrap/tb"]},
        {"name": "explain", "about": "keep explanations in format, with the label, that the teacher agrees with",
         "run": f"ecr explain --predictions {run}/bootstrap/predictions.jsonl --manifest {manifest} --root {root} "
                f"--output {sft_manifest} --labels {label_args}",
         "inputs": [f"{run}/bootstrap/predictions.jsonl"], "outputs": [sft_manifest]},
    ]  # fmt: skip


def pipeline_stages(
    *, run: str, manifest: str, root: str, labels: list[str] | str, bootstrap: bool, emotion_map: str | None
) -> list[dict[str, Any]]:
    """The pipeline's stages (`ecr pipeline` format) over the configs `stage_configs` wrote to `<run>/configs`."""
    cfg = lambda name: f"{run}/configs/{name}.yaml"  # noqa: E731
    label_arg = shlex.quote(labels if isinstance(labels, str) else "[" + ", ".join(labels) + "]")
    mapping = f" --emotion_map {shlex.quote(emotion_map)}" if emotion_map else ""
    sft_manifest = f"{run}/bootstrap/sft_manifest.jsonl" if bootstrap else manifest
    stages: list[dict[str, Any]] = [
        {"name": "check", "about": "every clip decodes, labels known", "run": f"ecr data check --config {cfg('grpo')}",
         "inputs": [manifest]},
    ]  # fmt: skip
    if bootstrap:
        stages += _bootstrap_stages(run, manifest, root, label_arg + mapping, cfg("bootstrap"))
    stages += [
        {"name": "check_sft", "about": "what SFT needs: an explanation on every train/val clip",
         "run": f"ecr data check --config {cfg('sft')}", "inputs": [sft_manifest]},
        {"name": "sft", "about": "SFT cold start", "run": f"ecr fit --config {cfg('sft')}", "inputs": [sft_manifest],
         "outputs": [f"{run}/sft/tb"], "clean": [f"{run}/sft/tb"]},
        {"name": "export_sft", "about": "the SFT policy merged into a model folder",
         "run": f"ecr export --checkpoint {run}/sft --out {run}/sft/export", "inputs": [f"{run}/sft/tb"],
         "outputs": [f"{run}/sft/export/merged"], "clean": [f"{run}/sft/export"]},
        {"name": "explain_sft", "about": "the SFT policy explains the training clips in its own words",
         "run": f"ecr predict --config {cfg('explain')}", "inputs": [f"{run}/sft/export/merged"],
         "outputs": [f"{run}/explain/predictions.jsonl"], "clean": [f"{run}/explain"]},
        {"name": "label", "about": "pseudo-label those sentences (offline lexicon teacher)",
         "run": f"ecr label --input {run}/explain/predictions.jsonl --output {run}/erv/sentences.jsonl "
                f"--teacher lexicon --labels {label_arg}{mapping}",
         "inputs": [f"{run}/explain/predictions.jsonl"], "outputs": [f"{run}/erv/sentences.jsonl"]},
        {"name": "erv", "about": "distil the verifier (prints the sentences per label first)",
         "run": f"ecr fit --config {cfg('erv')}", "inputs": [f"{run}/erv/sentences.jsonl"],
         "outputs": [f"{run}/erv/verifier"], "clean": [f"{run}/erv/tb", f"{run}/erv/verifier"]},
        {"name": "grpo", "about": "GRPO with format + accuracy + explanation rewards",
         "run": f"ecr fit --config {cfg('grpo')}", "inputs": [f"{run}/sft/export/merged", f"{run}/erv/verifier"],
         "outputs": [f"{run}/grpo/tb"], "clean": [f"{run}/grpo/tb"]},
        {"name": "predict_sft", "about": "the SFT policy on the test clips",
         "run": f"ecr predict --config {cfg('predict')}",
         "inputs": [f"{run}/sft/export/merged", f"{run}/erv/verifier"],
         "outputs": [f"{run}/predict/predictions.jsonl"], "clean": [f"{run}/predict"]},
        {"name": "predict_grpo", "about": "the GRPO policy on the test clips",
         "run": f"ecr predict --config {cfg('predict_grpo')}", "inputs": [f"{run}/grpo/tb", f"{run}/erv/verifier"],
         "outputs": [f"{run}/predict_grpo/predictions.jsonl"], "clean": [f"{run}/predict_grpo"]},
    ]  # fmt: skip
    for name in ("predict", "predict_grpo"):
        stages.append({
            "name": f"score_{name}", "about": "WAR/UAR, EPC/EEA/FCR with 95 % intervals",
            "run": f"ecr score --predictions {run}/{name}/predictions.jsonl --labels {label_arg} --manifest {manifest} "
                   f"--out {run}/{name}/metrics.json",
            "inputs": [f"{run}/{name}/predictions.jsonl"], "outputs": [f"{run}/{name}/metrics.json"],
        })  # fmt: skip
    stages.append({
        "name": "report", "about": "SFT vs GRPO side by side",
        "run": f"ecr report --predictions '[{run}/predict/predictions.jsonl, {run}/predict_grpo/predictions.jsonl]' "
               f"--names '[SFT, GRPO]' --labels {label_arg} --manifest {manifest} --out {run}/report",
        "inputs": [f"{run}/predict/predictions.jsonl", f"{run}/predict_grpo/predictions.jsonl"],
        "outputs": [f"{run}/report/index.html"],
    })  # fmt: skip
    return stages


def needs_bootstrap(manifest: Path, root: Path, labels: list[str] | str) -> bool:
    """True when some row of the manifest has no explanation (SFT then trains on bootstrapped ones)."""
    from ecr.data.manifests import read_custom_manifest
    from ecr.data.requirements import rows_without_explanation

    return bool(rows_without_explanation(read_custom_manifest(manifest, root, labels)))


def write_project(run: Path, configs: Mapping[str, dict[str, Any]], stages: list[dict[str, Any]]) -> None:
    """`<run>/configs/<stage>.yaml` and `<run>/pipeline.yaml` (stamps in `<run>/.pipeline`, apart from others')."""
    (run / "configs").mkdir(parents=True, exist_ok=True)
    for name, config in configs.items():
        text = yaml.dump(config, Dumper=_Dumper, sort_keys=False)
        (run / "configs" / f"{name}.yaml").write_text(text, encoding="utf-8")
    run_s = run.as_posix()
    pipeline = {
        "state_dir": f"{run_s}/.pipeline",
        "stages": stages,
        "summary": {
            "report": f"{run_s}/report/index.html",
            "metrics": {"SFT": f"{run_s}/predict/metrics.json", "GRPO": f"{run_s}/predict_grpo/metrics.json"},
        },
    }
    text = yaml.dump(pipeline, Dumper=_Dumper, sort_keys=False, width=200)
    (run / "pipeline.yaml").write_text(text, encoding="utf-8")


def init_command(
    manifest: Path,
    labels: str | list[str],
    model: str,
    run: Path,
    root: Path | None = None,
    preset: Preset = "demo",
    templates: Path | None = None,
    emotion_map: dict[str, str | None] | None = None,
) -> int:
    """Write stage configs and a pipeline for your own dataset, every output under one run directory.

    Then `ecr pipeline <run>/pipeline.yaml` runs the whole method (docs/custom_data.md); any stage config in
    `<run>/configs/` can be run alone.

    Args:
        manifest: your custom JSONL/CSV manifest (video + label; explanation optional).
        labels: the label set: dfew, mafw or a list such as [calm, excited, bored, tense].
        model: the base policy (a local folder or a hub id in your HF cache; `ecr model tiny --out DIR` offline).
        run: the run directory that receives the configs, the pipeline and every output.
        root: the dataset root the manifest's paths are relative to (default: the manifest's folder).
        preset: demo (CPU-sized stages of configs/demo) | full (the paper's GPU settings of configs/).
        templates: a folder of stage templates replacing the preset's.
        emotion_map: lexicon teacher mapping NRC emotion -> label (see `ecr label --emotion_map`).
    """
    try:
        root = root if root is not None else manifest.parent
        if not manifest.is_file():
            raise ConfigError(f"ecr init: manifest {manifest} does not exist")
        bootstrap = needs_bootstrap(manifest, root, labels)
        run_s = run.as_posix()
        sft_manifest = f"{run_s}/bootstrap/sft_manifest.jsonl" if bootstrap else manifest.as_posix()
        configs = stage_configs(
            templates or template_dir(preset), preset, run=run_s, root=root.as_posix(),
            manifest=manifest.as_posix(), labels=labels, model=model, sft_manifest=sft_manifest,
        )  # fmt: skip
        stages = pipeline_stages(
            run=run_s, manifest=manifest.as_posix(), root=root.as_posix(), labels=labels, bootstrap=bootstrap,
            emotion_map=json.dumps(emotion_map) if emotion_map else None,
        )  # fmt: skip
    except ECRError as err:
        print(f"ecr init: error: {err}", file=sys.stderr)
        return 2
    write_project(run, configs, stages)
    how = "bootstrapped with `ecr explain` (the manifest has rows without one)" if bootstrap else "from the manifest"
    print(f"ecr init: wrote {len(configs)} stage configs to {run / 'configs'} and {run / 'pipeline.yaml'}")
    print(f"SFT explanations: {how}. Run: ecr pipeline {run / 'pipeline.yaml'}")
    return 0
