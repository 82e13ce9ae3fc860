"""Dynamic sampling (DAPO) on the miniature: zero-spread groups trained and informative completions per second.

The setting, fixed before the runs: the demo's GRPO stage (`configs/demo/grpo.yaml`: the SFT demo policy merged,
G = 4, 4 prompts per step, 96 new tokens, lr 1e-3, group scaling, seed 0) with the binary rewards only, format +
accuracy (the control arm (b) of docs/miniature.md without the explanation term, whose continuous reward would give
most groups some spread), trained for `--steps` optimizer steps with `grpo.dynamic_sampling` false (plain) or true
(`max_resample_rounds` 4). Nothing else differs. Runs alternate (plain, dynamic, plain, ...) `--repeats` times,
each an ordinary `ecr fit` subprocess writing TensorBoard logs, which this script reads back:
- frac_zero_std (sampled): the share of sampled groups with no reward spread (every draw counted);
- frac_zero_std (trained): the share of zero-spread groups in what the optimizer step trained on;
- draws per step (dynamic: prompt batches sampled to fill one step);
- informative completions per step (completions of groups with spread that were trained) and per second of
  training (steps 2..N: the first step's wall time holds the model load), the throughput that matters.
The table gives the median of each over the repeats and the dynamic/plain ratio.

    ./scripts/demo.sh            # or: ecr pipeline --file configs/demo/pipeline.yaml --until export_sft
    .venv/bin/python benchmarks/bench_dynamic_sampling.py [--steps 12] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "demo" / "grpo.yaml"
POLICY = ROOT / "runs" / "demo_sft" / "export" / "merged"
REWARDS = json.dumps([{"name": "format", "weight": 1.0}, {"name": "accuracy", "weight": 1.0}])


def run(dynamic: bool, steps: int, out: Path) -> dict[str, float]:
    """One `ecr fit` of `steps` steps; the figures of its TensorBoard log."""
    args = [
        str(ROOT / ".venv" / "bin" / "ecr"), "fit", "--config", str(CONFIG),
        "--model.init_args.verifier", "null", "--model.init_args.rewards", REWARDS,
        "--model.init_args.grpo.dynamic_sampling", str(dynamic).lower(),
        "--model.init_args.grpo.max_resample_rounds", "4",
        "--model.init_args.grpo.log_completions_every_n_steps", "0",
        "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0",
        "--trainer.default_root_dir", str(out), "--trainer.logger.init_args.save_dir", str(out),
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"ecr fit failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    (log_dir,) = {p.parent for p in out.rglob("events.out.tfevents.*")}
    acc = EventAccumulator(str(log_dir)).Reload()
    series = lambda tag: acc.Scalars(tag) if tag in acc.Tags()["scalars"] else []  # noqa: E731
    informative = series("train/informative_completions")
    rounds = series("train/dynamic/rounds")
    seconds = informative[-1].wall_time - informative[0].wall_time
    phases = [t for t in acc.Tags()["scalars"] if t.startswith("train/time/") and t != "train/time/update"]
    sampling = sum(statistics.mean(e.value for e in series(t)[1:]) for t in phases)  # summed over a step's draws
    draws = statistics.mean(e.value for e in rounds[1:]) if rounds else 1.0
    return {
        "frac_zero_std_sampled": statistics.mean(e.value for e in series("train/frac_zero_std")),
        "frac_zero_std_trained": statistics.mean(e.value for e in series("train/frac_zero_std_trained")),
        "draws_per_step": statistics.mean(e.value for e in rounds) if rounds else 1.0,
        "informative_per_step": statistics.mean(e.value for e in informative),
        "informative_per_s": sum(e.value for e in informative[1:]) / seconds,
        "sampling_s_per_draw": sampling / draws,
        "update_s_per_step": statistics.mean(e.value for e in series("train/time/update")[1:]),
        "wall_s_per_step": seconds / (len(informative) - 1),
        "steps": float(len(informative)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    if not (POLICY / "config.json").is_file():
        sys.exit(f"{POLICY} is missing: run ./scripts/demo.sh (or its pipeline --until export_sft) first")
    results: dict[str, list[dict[str, float]]] = {"plain": [], "dynamic": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.repeats):
            for arm in ("plain", "dynamic"):
                figures = run(arm == "dynamic", a.steps, Path(tmp) / f"{arm}{i}")
                results[arm].append(figures)
                print(f"[bench] {arm} #{i}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()), flush=True)
    names = list(results["plain"][0])
    median = {arm: {k: statistics.median(r[k] for r in runs) for k in names} for arm, runs in results.items()}
    print(f"\n{a.steps} steps per run, {a.repeats} runs per arm (medians)\n")
    print("| figure | plain | dynamic sampling | dynamic / plain |")
    print("|---|---:|---:|---:|")
    for k in names:
        plain, dyn = median["plain"][k], median["dynamic"][k]
        ratio = f"{dyn / plain:.2f}" if plain else "-"
        print(f"| {k} | {plain:.3f} | {dyn:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
