"""The paper's comparison in miniature on the embedded default (issue: "the paper's effect, measured honestly").

On the same held-out synthetic test clips (96 fresh clips, seed 1; the demo's own test split has 8), for each seed:
  (a) SFT                       the demo's SFT policy (shared by every seed: GRPO's start)
  (b) GRPO format + accuracy    the explanation term is computed and logged with weight 0 (not optimised)
  (c) GRPO + explanation (ERV)  format + accuracy + explanation, weight 1 each (the paper)
  (d) (c) + best-of-N           (c)'s policy, N candidates per clip sampled at the paper's evaluation setting
                                (T 0.3, top-p 0.9) and reranked by the verifier
Every run is an ordinary `ecr` command (printed as it runs). The results land in runs/miniature/: per-run
predictions and metrics.json, `results.json`, `results.md` (mean ± std over seeds of WAR/UAR/EPC/EEA/FCR, and
each variant's paired delta against SFT with its bootstrap 95 % interval, per seed) and `reward_curves.png`
(the explanation and accuracy reward terms during training, (b) vs (c), mean over seeds).

Run after the demo's inputs exist (./scripts/demo.sh, or it runs the needed stages itself):
  .venv/bin/python scripts/paper_in_miniature.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

METRICS = ("war", "uar", "epc", "eea", "fcr")
OUT = Path("runs/miniature")
REWARDS = {
    "b": "[{name: format, weight: 1.0}, {name: accuracy, weight: 1.0}, {name: explanation, weight: 0.0}]",
    "c": "[{name: format, weight: 1.0}, {name: accuracy, weight: 1.0}, {name: explanation, weight: 1.0}]",
}
NAMES = {"a": "SFT", "b": "GRPO fmt+acc", "c": "GRPO +ERV", "d": "GRPO +ERV, best-of-N"}


def ecr(*args: str) -> None:
    """Run one `ecr` command of this venv; a failure stops the experiment with the command's exit code."""
    print("$ ecr " + shlex.join(args), flush=True)
    code = subprocess.call([sys.executable, "-c", "from ecr.cli import main; main()", *args])
    if code:
        sys.exit(f"paper_in_miniature: `ecr {shlex.join(args)}` failed (exit {code})")


def overlay(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def heldout(num_clips: int) -> Path:
    """A fresh synthetic test set (seed 1: other clips than the demo's 64), every row in the test split: the demo's
    own 8 test clips are far too few to tell variants apart."""
    root = OUT / "heldout"
    manifest = root / "test_all.jsonl"
    if not manifest.is_file():
        ecr("data", "synth", "--out", str(root), "--num-clips", str(num_clips), "--labels", "dfew", "--seed", "1")
        rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
        manifest.write_text("".join(json.dumps({**r, "split": "test"}) + "\n" for r in rows))
    return manifest


def predict(run: Path, checkpoint: Path | None, test: Path, extra: str = "") -> Path:
    """`ecr predict` of the demo config for a checkpoint (None: the SFT export) on the held-out clips."""
    out = run / "predictions.jsonl"
    model = f"model:\n  init_args:\n    policy: null\n    checkpoint: {checkpoint}\n{extra}" if checkpoint else ""
    data = (
        f"data:\n  init_args:\n    root: {test.parent}\n    manifest: {test}\n    cache_dir: {test.parent / 'cache'}\n"
        "    batch_size: 8\n"
    )
    config = overlay(
        run / "predict_overlay.yaml",
        f"{model}{data}trainer:\n  default_root_dir: {run}\n"
        f"  logger:\n    class_path: lightning.pytorch.loggers.TensorBoardLogger\n"
        f"    init_args:\n      save_dir: {run}\n      name: tb\n  callbacks:\n"
        f"    - class_path: ecr.evaluation.PredictionWriter\n      init_args:\n        output: {out}\n",
    )
    ecr("predict", "--config", "configs/demo/predict.yaml", "--config", config)
    return out


def score(predictions: Path, baseline: Path | None, bootstrap: int) -> dict:
    out = predictions.with_name("metrics.json")
    args = ["score", "--predictions", str(baseline or predictions), "--labels", "dfew", "--out", str(out)]
    if baseline is not None:  # paired: metrics of the baseline, `comparison` = this file - baseline
        args += ["--compare", str(predictions)]
    ecr(*args, "--bootstrap", str(bootstrap))
    return json.loads(out.read_text())


def compared(m: dict, seed: int) -> dict:
    """One seed's row: the compared file's own metrics (`b` of the paired comparison) and the comparison."""
    return {"seed": seed, "metrics": {k: v["b"] for k, v in m["comparison"]["metrics"].items()}, **m}


def grpo(variant: str, seed: int, steps: int) -> Path:
    run = OUT / f"{variant}_seed{seed}"
    shutil.rmtree(run, ignore_errors=True)
    ecr(
        "fit", "--config", "configs/demo/grpo.yaml", "--seed_everything", str(seed),
        "--model.init_args.rewards", REWARDS[variant], "--trainer.max_steps", str(steps),
        "--trainer.default_root_dir", str(run), "--trainer.logger.init_args.save_dir", str(run),
        "--trainer.enable_progress_bar", "false",
    )  # fmt: skip
    return run / "tb/version_0/checkpoints/last.ckpt"


def reward_curves(runs: dict[str, list[Path]], out: Path) -> None:
    """(b) vs (c): the explanation and accuracy terms per step, mean over seeds (TensorBoard scalars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, term in zip(axes, ("explanation", "accuracy"), strict=True):
        for variant, dirs in runs.items():
            curves = []
            for d in dirs:
                acc = EventAccumulator(str(next(d.rglob("events.out.tfevents.*")).parent), size_guidance={"scalars": 0})
                acc.Reload()
                curves.append([e.value for e in acc.Scalars(f"train/reward/{term}")])
            n = min(map(len, curves))
            mean = [statistics.fmean(c[i] for c in curves) for i in range(n)]
            ax.plot(range(1, n + 1), mean, label=NAMES[variant])
        ax.set(title=f"train/reward/{term}", xlabel="step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def table(results: dict) -> str:
    lines = ["| variant | " + " | ".join(m.upper() for m in METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for v, per_seed in results.items():
        cells = []
        for m in METRICS:
            vals = [100 * r["metrics"][m] for r in per_seed if r["metrics"].get(m) is not None]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.fmean(vals):.1f} ± {sd:.1f}" if vals else "-")
        lines.append(f"| ({v}) {NAMES[v]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Paired delta against (a) SFT on the same clips, per seed: delta [95 % bootstrap interval], points.",
        "",
    ]
    lines += ["| variant | seed | " + " | ".join(m.upper() for m in METRICS) + " |", "|---" * (len(METRICS) + 2) + "|"]
    for v, per_seed in results.items():
        for r in per_seed:
            comp = r.get("comparison")
            if not comp:
                continue
            cells = []
            for m in METRICS:
                c = comp["metrics"].get(m) or {}
                iv = c.get("interval")
                delta = c.get("delta")
                if delta is None:
                    cells.append("-")
                else:
                    cells.append(
                        f"{100 * delta:+.1f} [{100 * iv[0]:+.1f}, {100 * iv[1]:+.1f}]" if iv else f"{100 * delta:+.1f}"
                    )
            lines.append(f"| ({v}) | {r['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=120, help="GRPO steps per run (configs/demo/grpo.yaml: 120)")
    parser.add_argument("--num-samples", type=int, default=4, help="best-of-N candidates per clip for (d)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--num-clips", type=int, default=96, help="held-out synthetic test clips (seed 1)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ecr("pipeline", "--file", "configs/demo/pipeline.yaml")  # the demo's SFT policy and verifier (skips if up to date)

    test = heldout(args.num_clips)
    sft = predict(OUT / "a", None, test)
    results: dict[str, list[dict]] = {"a": [{"seed": None, "metrics": score(sft, None, args.bootstrap)}]}
    runs: dict[str, list[Path]] = {"b": [], "c": []}
    best_of_n = (
        f"    num_samples: {args.num_samples}\n    rerank: verifier\n"
        "    generation:\n      do_sample: true\n      temperature: 0.3\n      top_p: 0.9\n      max_new_tokens: 96\n"
    )
    for seed in args.seeds:
        for variant in ("b", "c"):
            ckpt = grpo(variant, seed, args.steps)
            runs[variant].append(ckpt.parents[3])
            m = score(predict(OUT / f"{variant}_seed{seed}" / "predict", ckpt, test), sft, args.bootstrap)
            results.setdefault(variant, []).append(compared(m, seed))
            if variant == "c":
                pred = predict(OUT / f"d_seed{seed}", ckpt, test, extra=best_of_n)
                m = score(pred, sft, args.bootstrap)
                results.setdefault("d", []).append(compared(m, seed))
    (OUT / "results.json").write_text(json.dumps(results, indent=2))
    (OUT / "results.md").write_text(table(results))
    reward_curves(runs, OUT / "reward_curves.png")
    print("\n" + (OUT / "results.md").read_text() + f"\nplot: {OUT / 'reward_curves.png'}")


if __name__ == "__main__":
    main()
