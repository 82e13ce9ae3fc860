"""The paper's comparison in miniature, on the embedded default, judged independently.

The setting (`ecr data synth --conflict-fraction 0.4 --conflict-follow 0.8`, docs/miniature.md): 40 % of the clips
carry the voice of another emotion than the face (the label), and 80 % of those clips' training explanations follow
the misleading voice while the answer stays right, so the SFT policy's MOST LIKELY explanation on a conflict clip
contradicts its answer. The judge is the generator's own sentence table (`--judge cue`), not the verifier the
reward uses; the verifier judge is reported beside it, and so is the verifier's per-sentence F1 against the table.

Steps (every run is an ordinary `ecr` command, printed as it runs; results in runs/miniature/):
  0. the demo's data, SFT policy and verifier (`./scripts/demo.sh` must have run);
  1. held-out clips: `--num-clips` fresh clips (seed 1, the same synth options), every row in the test split;
  2. the GATE, fixed before any RL: on the held-out clips the SFT policy must reach greedy WAR >= 80 %, at T = 1
     format >= 95 % and accuracy >= 60 %, and its greedy EPC on conflict clips must be <= 50 % (the defect is
     really there). A failed gate stops the experiment (fix SFT, not GRPO);
  3. the DEV SEED (seed 100): the control arm (b) only, for each (lr, advantage scaling) of `DEV_GRID`; the setting
     with the highest mean training accuracy reward over the last third of the steps wins (ties: the lower lr).
     Only the control arm's accuracy curve is looked at. The choice is frozen in runs/miniature/dev.json;
  4. for each seed, two GRPO arms from the same SFT policy, identical except the explanation weight:
       (b) format + accuracy (explanation computed and logged with weight 0)
       (c) format + accuracy + explanation (ERV), weight 1 each (the paper)
     then greedy predictions on the held-out clips;
  5. analysis: WAR/UAR/EPC/EEA/FCR for all, conflict and non-conflict clips (cue judge), per-seed paired bootstrap
     intervals for (c - b) and (c - a), the pooled (c - b) interval over every (seed, clip) pair, gaming statistics
     (explanation length, label-word density, repeated sentences, sentences the table does not know), and the
     reward curves as windowed means with intervals, (b) vs (c).

SUCCESS CRITERION (stated before the deciding runs): EPC and FCR of (c) above (b) in every seed (cue judge, all
held-out clips), the pooled (c - b) 95 % interval of both excluding 0, and pooled WAR(c) >= WAR(b) - 3 points.

  .venv/bin/python scripts/paper_in_miniature.py --seeds 0 1 2       # after ./scripts/demo.sh
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

METRICS = ("war", "uar", "epc", "eea", "fcr")
OUT = Path("runs/miniature")
SYNTH = Path("demo_data/synth")
SYNTH_OPTIONS = ("--labels", "dfew", "--conflict-fraction", "0.4", "--conflict-follow", "0.8")
DEV_SEED = 100
DEV_GRID = (("1.0e-3", "group"), ("3.0e-3", "group"), ("1.0e-3", "none"), ("3.0e-3", "none"))
WEIGHTS = {"b": 0.0, "c": 1.0}
NAMES = {"a": "SFT", "b": "GRPO fmt+acc", "c": "GRPO +ERV"}
GATE = {"greedy_war": 0.80, "sampled_format": 0.95, "sampled_accuracy": 0.60, "conflict_epc_max": 0.50}
SUBSETS = ("all", "conflict", "clean")


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
    """Fresh synthetic test clips (seed 1: other clips than the demo's), every row in the test split."""
    root = OUT / "heldout"
    manifest = root / "test_all.jsonl"
    if not manifest.is_file():
        ecr("data", "synth", "--out", str(root), "--num-clips", str(num_clips), "--seed", "1", *SYNTH_OPTIONS)
        rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
        manifest.write_text("".join(json.dumps({**r, "split": "test"}) + "\n" for r in rows))
    return manifest


def predict(run: Path, checkpoint: Path | None, test: Path, sampled_seed: int | None = None) -> Path:
    """`ecr predict` of the demo config (greedy, or at T = 1 with a seed) for a checkpoint (None: the SFT export)."""
    out = run / "predictions.jsonl"
    if out.is_file():
        return out
    args = ""
    if checkpoint is not None:
        args += f"    policy: null\n    checkpoint: {checkpoint}\n"
    if sampled_seed is not None:
        args += f"    seed: {sampled_seed}\n    generation:\n      do_sample: true\n      temperature: 1.0\n"
    model = f"  init_args:\n{args}" if args else ""
    data = (
        f"data:\n  init_args:\n    root: {test.parent}\n    manifest: {test}\n    cache_dir: {test.parent / 'cache'}\n"
        "    batch_size: 8\n"
    )
    config = overlay(
        run / "predict_overlay.yaml",
        (f"model:\n{model}" if model else "") + f"{data}trainer:\n  default_root_dir: {run}\n"
        f"  logger: false\n  callbacks:\n"
        f"    - class_path: ecr.evaluation.PredictionWriter\n      init_args:\n        output: {out}\n",
    )
    ecr("predict", "--config", "configs/demo/predict.yaml", "--config", config)
    return out


def grpo(run: Path, seed: int, weight: float, lr: str, scale: str, steps: int) -> Path:
    """One GRPO arm from the demo's SFT policy; returns its last checkpoint (reused when the run finished)."""
    ckpt = run / "tb/version_0/checkpoints/last.ckpt"
    if ckpt.is_file():
        return ckpt
    shutil.rmtree(run, ignore_errors=True)
    rewards = (
        f"[{{name: format, weight: 1.0}}, {{name: accuracy, weight: 1.0}}, {{name: explanation, weight: {weight}}}]"
    )
    ecr(
        "fit", "--config", "configs/demo/grpo.yaml", "--seed_everything", str(seed), "--data.init_args.seed", str(seed),
        "--model.init_args.rewards", rewards, "--model.init_args.optimization.lr", lr,
        "--model.init_args.grpo.scale_rewards", scale,
        "--trainer.max_steps", str(steps), "--trainer.default_root_dir", str(run),
        "--trainer.logger.init_args.save_dir", str(run), "--trainer.enable_progress_bar", "false",
    )  # fmt: skip
    return ckpt


def scalars(run: Path, tag: str) -> list[float]:
    """A TensorBoard scalar of a run, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next(run.rglob("events.out.tfevents.*")).parent), size_guidance={"scalars": 0})
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)]


# ------------------------------------------------------------------------------------------------- analysis
def load(path: Path, label_set):  # noqa: ANN001, ANN201 - ecr types imported lazily
    from ecr.evaluation.predictions import read_predictions

    return read_predictions(path, label_set)


def subset(preds: list, meta: dict[str, dict], name: str) -> list:
    if name == "all":
        return preds
    want = name == "conflict"
    return [p for p in preds if bool(meta[p.id].get("conflict")) == want]


def metrics_of(preds: list, label_set, judge) -> dict:  # noqa: ANN001
    from ecr.evaluation.score import score_predictions

    m = score_predictions(preds, label_set, judge, bootstrap=0)
    return {k: m.get(k) for k in (*METRICS, "n", "judged", "missing")}


def compare(a: list, b: list, label_set, judge, bootstrap: int) -> dict:  # noqa: ANN001
    from ecr.evaluation.score import compare_predictions

    return compare_predictions(a, b, label_set, judge, bootstrap=bootstrap)["metrics"]


def gaming(preds: list, label_set, judge) -> dict:  # noqa: ANN001
    """How the explanations look: words, sentences, label words (labels and their synonyms) per 100 words, repeated
    sentences within an explanation, sentences the generator's table does not know."""
    from ecr.sentences import normalize_sentence, split_official

    n_words = n_label = n_sent = n_dup = n_unknown = 0
    for p in preds:
        sentences = split_official(p.think or "")
        keys = [normalize_sentence(s) for s in sentences]
        n_sent += len(keys)
        n_dup += len(keys) - len(set(keys))
        n_unknown += sum(k not in judge.table for k in keys)
        tokens = re.findall(r"[a-z]+", (p.think or "").lower())
        n_words += len(tokens)
        n_label += sum(label_set.normalize(t) is not None for t in tokens)  # a label or a synonym of one
    n = max(1, len(preds))
    return {
        "words": n_words / n,
        "sentences": n_sent / n,
        "label_words_per_100": 100 * n_label / max(1, n_words),
        "repeated_sentences": n_dup / max(1, n_sent),
        "unknown_sentences": n_unknown / max(1, n_sent),
    }


def pooled(runs: dict[int, list]) -> list:
    """Every (seed, clip) pair as one row: ids prefixed by the seed, so paired comparisons match across arms."""
    return [dataclasses.replace(p, id=f"{seed}:{p.id}") for seed, preds in sorted(runs.items()) for p in preds]


def windows(values: list[float], size: int) -> list[list[float]]:
    return [values[i : i + size] for i in range(0, len(values) - size + 1, size)]


def reward_curves(runs: dict[str, list[Path]], out: Path, window: int = 10) -> dict:
    """(b) vs (c): windowed means of the reward terms over seeds, with normal 95 % intervals over the window's
    per-step values of every seed (steps are not independent: read the bands as a guide, not a test)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    terms = ("explanation", "accuracy", "format")
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
    curves: dict = {}
    ax = axes[3]  # the same validation clips every time: the steadier view of the explanation term
    for variant, dirs in runs.items():
        per_seed = [scalars(d, "val/reward/explanation") for d in dirs]
        k = min(map(len, per_seed))
        xs = [(i + 1) * len(scalars(dirs[0], "train/reward/explanation")) / k for i in range(k)]
        mean = [statistics.fmean(seed[i] for seed in per_seed) for i in range(k)]
        lo = [min(seed[i] for seed in per_seed) for i in range(k)]
        hi = [max(seed[i] for seed in per_seed) for i in range(k)]
        ax.plot(xs, mean, marker="o", ms=3, label=NAMES[variant])
        ax.fill_between(xs, lo, hi, alpha=0.2)
        curves.setdefault("val_explanation", {})[variant] = {"step": xs, "mean": mean, "lo": lo, "hi": hi}
    ax.set(title="val/reward/explanation (seed min-max)", xlabel="step")
    ax.legend()
    for ax, term in zip(axes, terms, strict=False):
        for variant, dirs in runs.items():
            per_seed = [windows(scalars(d, f"train/reward/{term}"), window) for d in dirs]
            k = min(map(len, per_seed))
            xs, mean, lo, hi = [], [], [], []
            for w in range(k):
                vals = [v for seed in per_seed for v in seed[w]]
                m = statistics.fmean(vals)
                half = 1.96 * statistics.stdev(vals) / len(vals) ** 0.5 if len(vals) > 1 else 0.0
                xs.append((w + 0.5) * window)
                mean.append(m)
                lo.append(m - half)
                hi.append(m + half)
            ax.plot(xs, mean, marker="o", ms=3, label=NAMES[variant])
            ax.fill_between(xs, lo, hi, alpha=0.2)
            curves.setdefault(term, {})[variant] = {"step": xs, "mean": mean, "lo": lo, "hi": hi}
        ax.set(title=f"train/reward/{term} ({window}-step windows)", xlabel="step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return curves


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def delta_cell(c: dict | None) -> str:
    if not c or c.get("delta") is None:
        return "-"
    iv = c.get("interval")
    return f"{100 * c['delta']:+.1f} [{100 * iv[0]:+.1f}, {100 * iv[1]:+.1f}]" if iv else f"{100 * c['delta']:+.1f}"


def mean_sd(vals: list[float]) -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{100 * statistics.fmean(vals):.1f} ± {100 * sd:.1f}"


def report(res: dict) -> str:
    """results.md: the gate, the dev choice, the tables, the criterion and its verdict."""
    g = res["gate"]
    lines = [
        "Gate (SFT policy on the held-out clips): "
        f"greedy WAR {pct(g['greedy_war'])} % (>= 80), T = 1 format {pct(g['sampled_format'])} % (>= 95) and accuracy "
        f"{pct(g['sampled_accuracy'])} % (>= 60), greedy EPC on conflict clips {pct(g['conflict_epc'])} % (<= 50): "
        f"{'passed' if g['passed'] else 'FAILED'}.",
        "",
        f"Dev seed {DEV_SEED} (control arm only, mean training accuracy over the last third of the steps): "
        + ", ".join(f"lr {d['lr']} / scale {d['scale']}: {d['score']:.3f}" for d in res["dev"]["grid"])
        + f" -> lr {res['dev']['lr']}, scale_rewards {res['dev']['scale']} (frozen for every seed).",
        "",
    ]
    for sub in SUBSETS:
        n = res["subset_sizes"][sub]
        lines += [f"**{sub} clips ({n})**, cue judge, mean ± std over seeds, %:", ""]
        lines += ["| variant | " + " | ".join(m.upper() for m in METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
        for v in ("a", "b", "c"):
            rows = res["metrics"][v]
            cells = [mean_sd([r[sub][m] for r in rows]) for m in METRICS]
            lines.append(f"| ({v}) {NAMES[v]} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Paired deltas per seed, cue judge, all clips: delta [95 % bootstrap interval], points.", ""]
    lines += ["| comparison | seed | " + " | ".join(m.upper() for m in METRICS) + " |"]
    lines += ["|---" * (len(METRICS) + 2) + "|"]
    for name, per_seed in res["deltas"].items():
        for seed, d in per_seed.items():
            lines.append(f"| {name} | {seed} | " + " | ".join(delta_cell(d["all"].get(m)) for m in METRICS) + " |")
    for name, d in res["pooled"].items():
        lines.append(f"| {name} | pooled | " + " | ".join(delta_cell(d.get(m)) for m in METRICS) + " |")
    lines += ["", "Conflict clips only, per seed, (c - b):", ""]
    lines += ["| seed | " + " | ".join(m.upper() for m in METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for seed, d in res["deltas"]["c - b"].items():
        lines.append(f"| {seed} | " + " | ".join(delta_cell(d["conflict"].get(m)) for m in METRICS) + " |")
    lines += ["", "Secondary: the reward's own verifier as the judge (all clips, mean ± std over seeds, %):", ""]
    lines += ["| variant | EPC | EEA | FCR |", "|---|---|---|---|"]
    for v in ("a", "b", "c"):
        rows = res["metrics"][v]
        lines.append(
            f"| ({v}) | " + " | ".join(mean_sd([r["verifier"][m] for r in rows]) for m in ("epc", "eea", "fcr")) + " |"
        )
    f1 = res["verifier_vs_cue"]
    lines += [
        "",
        f"Verifier vs the generator's table, per sentence of the SFT policy's held-out explanations ({f1['sentences']} "
        f"sentences): macro F1 {pct(f1['macro_f1'])} %; per class F1: "
        + ", ".join(f"{c} {pct(v['f1'])}" for c, v in f1["per_class"].items() if v["support"]),
        "",
        "Gaming statistics (held-out explanations, mean over seeds): words, sentences, label words per 100 words, "
        "repeated sentences %, sentences not in the table verbatim % (the judge near-matches most of them):",
        "",
        "| variant | words | sentences | label words /100 | repeated % | not verbatim % |",
        "|---|---|---|---|---|---|",
    ]
    for v in ("a", "b", "c"):
        gs = [r["gaming"] for r in res["metrics"][v]]
        avg = {k: statistics.fmean(g[k] for g in gs) for k in gs[0]}
        lines.append(
            f"| ({v}) | {avg['words']:.1f} | {avg['sentences']:.2f} | {avg['label_words_per_100']:.1f} | "
            f"{100 * avg['repeated_sentences']:.1f} | {100 * avg['unknown_sentences']:.1f} |"
        )
    verdict = res["criterion"]
    lines += [
        "",
        f"Criterion: {verdict['text']}",
        "",
        f"**Met: {'yes' if verdict['met'] else 'no'}** ({verdict['why']})",
    ]
    return "\n".join(lines) + "\n"


def criterion(res: dict) -> dict:
    per_seed = res["deltas"]["c - b"]
    every = {m: all((d["all"][m]["delta"] or 0) > 0 for d in per_seed.values()) for m in ("epc", "fcr")}
    pooled_cb = res["pooled"]["c - b"]
    excl = {m: bool(pooled_cb[m]["interval"]) and pooled_cb[m]["interval"][0] > 0 for m in ("epc", "fcr")}
    war_ok = pooled_cb["war"]["delta"] >= -0.03
    why = (
        f"EPC above in every seed: {every['epc']}, FCR: {every['fcr']}; pooled interval excludes 0: EPC {excl['epc']}, "
        f"FCR {excl['fcr']}; pooled WAR(c) - WAR(b) = {100 * pooled_cb['war']['delta']:+.1f} points (>= -3: {war_ok})"
    )
    return {
        "text": "EPC and FCR of (c) above (b) in every seed, the pooled (c - b) interval excluding 0 for both, "
        "pooled WAR(c) >= WAR(b) - 3 points (cue judge, all held-out clips).",
        "met": all(every.values()) and all(excl.values()) and war_ok,
        "why": why,
    }


def gate_check(test: Path) -> dict:
    """The gate's four figures on the held-out clips (greedy and T = 1, seed 0), from the SFT export."""
    from ecr.evaluation.judges import CueJudge
    from ecr.labels import get_label_set
    from ecr.prompts import is_well_formed

    label_set = get_label_set("dfew")
    judge = CueJudge(test.parent / "cue_table.json", label_set)
    meta = {json.loads(line)["id"]: json.loads(line) for line in test.read_text().splitlines()}
    greedy = load(predict(OUT / "a", None, test), label_set)
    sampled_path = predict(OUT / "gate_sampled", None, test, sampled_seed=0)
    sampled = load(sampled_path, label_set)
    rows = [json.loads(line) for line in sampled_path.read_text().splitlines()]
    conflict = metrics_of(subset(greedy, meta, "conflict"), label_set, judge)
    g = {
        "greedy_war": metrics_of(greedy, label_set, None)["war"],
        "sampled_format": sum(is_well_formed(r.get("completion") or "") for r in rows) / len(rows),
        "sampled_accuracy": sum(p.prediction == p.label for p in sampled) / len(sampled),
        "conflict_epc": conflict["epc"],
    }
    g["passed"] = (
        g["greedy_war"] >= GATE["greedy_war"]
        and g["sampled_format"] >= GATE["sampled_format"]
        and g["sampled_accuracy"] >= GATE["sampled_accuracy"]
        and g["conflict_epc"] is not None
        and g["conflict_epc"] <= GATE["conflict_epc_max"]
    )
    return g


def dev_choice(steps: int) -> dict:
    """Step 3: the control arm on the dev seed for each grid setting; frozen in dev.json once chosen."""
    path = OUT / "dev.json"
    if path.is_file():
        return json.loads(path.read_text())
    grid = []
    for lr, scale in DEV_GRID:
        run = OUT / f"dev_b_lr{lr}_{scale}"
        grpo(run, DEV_SEED, WEIGHTS["b"], lr, scale, steps)
        acc = scalars(run, "train/reward/accuracy")
        tail = acc[-max(1, len(acc) // 3) :]
        grid.append({"lr": lr, "scale": scale, "score": statistics.fmean(tail), "accuracy_curve": acc})
    best = max(grid, key=lambda d: (round(d["score"], 6), -float(d["lr"])))
    choice = {"lr": best["lr"], "scale": best["scale"], "steps": steps, "grid": grid}
    path.write_text(json.dumps(choice, indent=1))
    return choice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=120, help="GRPO steps per run (configs/demo/grpo.yaml)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--num-clips", type=int, default=140, help="held-out synthetic clips (seed 1)")
    parser.add_argument("--ignore-gate", action="store_true", help="go on when the SFT gate fails (for diagnosis)")
    parser.add_argument("--dev-only", action="store_true", help="stop after the dev-seed choice")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    needed = [Path("runs/demo_sft/export/merged"), Path("runs/demo_erv/verifier"), SYNTH / "manifest.jsonl"]
    if not all(p.exists() for p in needed):
        sys.exit("paper_in_miniature: run ./scripts/demo.sh first (it builds the data, SFT policy and verifier)")

    from ecr.evaluation.judges import CueJudge, VerifierJudge
    from ecr.evaluation.score import score_predictions
    from ecr.labels import get_label_set

    test = heldout(args.num_clips)
    gate = gate_check(test)
    (OUT / "gate.json").write_text(json.dumps(gate, indent=1))
    print(f"gate: {gate}", flush=True)
    if not gate["passed"] and not args.ignore_gate:
        sys.exit("paper_in_miniature: the SFT policy fails the gate; strengthen SFT before any RL (see gate.json)")
    dev = dev_choice(args.steps)
    print(f"dev choice: lr {dev['lr']}, scale_rewards {dev['scale']}", flush=True)
    if args.dev_only:
        return

    label_set = get_label_set("dfew")
    cue = CueJudge(test.parent / "cue_table.json", label_set)
    verifier = VerifierJudge(Path("runs/demo_erv/verifier"), label_set)
    meta = {json.loads(line)["id"]: json.loads(line) for line in test.read_text().splitlines()}
    preds: dict[str, dict[int, list]] = {"a": {}, "b": {}, "c": {}}
    sft = load(predict(OUT / "a", None, test), label_set)
    runs: dict[str, list[Path]] = {"b": [], "c": []}
    for seed in args.seeds:
        preds["a"][seed] = sft
        for v in ("b", "c"):
            run = OUT / f"{v}_seed{seed}"
            ckpt = grpo(run, seed, WEIGHTS[v], dev["lr"], dev["scale"], dev["steps"])
            runs[v].append(run)
            preds[v][seed] = load(predict(run / "predict", ckpt, test), label_set)

    res: dict = {"gate": gate, "dev": {k: dev[k] for k in ("lr", "scale", "steps")}, "seeds": args.seeds}
    res["dev"]["grid"] = [{k: d[k] for k in ("lr", "scale", "score")} for d in dev["grid"]]
    res["subset_sizes"] = {s: len(subset(sft, meta, s)) for s in SUBSETS}
    res["metrics"] = {
        v: [
            {
                **{s: metrics_of(subset(p, meta, s), label_set, cue) for s in SUBSETS},
                "verifier": metrics_of(p, label_set, verifier),
                "gaming": gaming(p, label_set, cue),
                "seed": seed,
            }
            for seed, p in sorted(preds[v].items())
        ]
        for v in ("a", "b", "c")
    }
    res["deltas"] = {
        name: {
            seed: {
                s: compare(
                    subset(preds[x][seed], meta, s), subset(preds["c"][seed], meta, s), label_set, cue, args.bootstrap
                )
                for s in ("all", "conflict")
            }  # fmt: skip
            for seed in args.seeds
        }
        for name, x in (("c - b", "b"), ("c - a", "a"))
    }
    res["pooled"] = {
        name: compare(pooled(preds[x]), pooled(preds["c"]), label_set, cue, args.bootstrap)
        for name, x in (("c - b", "b"), ("c - a", "a"))
    }
    res["verifier_vs_cue"] = score_predictions(sft, label_set, [cue, verifier], bootstrap=0)["verifier_vs_cue"]
    res["criterion"] = criterion(res)
    res["reward_curves"] = reward_curves(runs, OUT / "reward_curves.png")
    (OUT / "results.json").write_text(json.dumps(res, indent=1, default=str))
    (OUT / "results.md").write_text(report(res))
    print("\n" + (OUT / "results.md").read_text() + f"\nplot: {OUT / 'reward_curves.png'}")


if __name__ == "__main__":
    main()
