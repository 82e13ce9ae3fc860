"""Verifier throughput and the cost of the explanation reward (ERV), on the offline MiniLM student.

Measures, on the current device (CPU unless --device cuda):
  1. sentences/s of `HFVerifier.probs` batched as the reward calls it (length-sorted batches of 64);
  2. the same batches without length sorting (what a naive batched call pays in padding);
  3. one sentence at a time (what a per-sentence loop costs);
  4. `ExplanationReward` on 64 completions of ~6 sentences: total time per call, the verifier's share, and
     the cost of the two sentence splitters.

Usage: python benchmarks/bench_verifier.py [--verifier PATH] [--threads N] [--repeats 5] [--device cpu]
(--verifier loads an exported folder; default: MiniLM with a fresh 28-class GoEmotions head — the head does not
change the cost.)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from ecr.fixtures.synth import compose_explanation, profile_for
from ecr.labels import DFEW_LABELS, GOEMOTIONS_LABELS
from ecr.models.verifier import HFVerifier, build_student, load_verifier
from ecr.rl.rewards import ExplanationReward
from ecr.sentences import split_official


def measure(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """(median, best) wall time in seconds of each function, after one warm-up call each.

    The functions run interleaved (round-robin per repeat), so a change of machine load hits all of them
    alike; on a shared machine the best run is the closer estimate of the code's own cost.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: (statistics.median(v), min(v)) for k, v in times.items()}


def completions(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """n EMER-style completions (~6 sentences each) with their labels."""
    rng = np.random.default_rng(seed)
    k = len(DFEW_LABELS)
    out, labels = [], []
    for i in range(n):
        label = DFEW_LABELS[i % k]
        text = " ".join(compose_explanation(profile_for(label, i % k, k), rng) for _ in range(2))
        sents = split_official(text)[:6]
        out.append(f"<think>{' '.join(sents)}</think>\n<answer>{label}</answer>")
        labels.append(label)
    return out, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verifier", default=None, help="exported verifier folder (default: MiniLM, fresh head)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sentences", type=int, default=384)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.verifier:
        verifier = load_verifier(args.verifier, device=args.device)
    else:
        model, tok = build_student("minilm", GOEMOTIONS_LABELS)
        verifier = HFVerifier(model, tok, GOEMOTIONS_LABELS).to(args.device).eval()

    comps, labels = completions(64)
    pool = [
        s for c in completions(args.sentences // 4 + 1, seed=1)[0] for s in split_official(c[7 : c.index("</think>")])
    ]
    sents = pool[: args.sentences]
    single = sents[:64]

    def unsorted() -> None:
        with torch.inference_mode():
            for i in range(0, len(sents), verifier.batch_size):
                verifier(sents[i : i + verifier.batch_size])

    reward = ExplanationReward(verifier, "dfew")
    splitters = {name: ExplanationReward(verifier, "dfew", splitter=name) for name in ("official", "pysbd")}
    flat = [s for c in comps for s in reward.reader.think_sentences(c).sentences]
    n_sent = len(flat)
    t = measure(
        {
            "sorted": lambda: verifier.probs(sents),
            "unsorted": unsorted,
            "single": lambda: [verifier.probs([s]) for s in single],
            "reward": lambda: reward(comps, labels),
            "reward_verifier": lambda: verifier.probs(flat),
            "official": lambda: [splitters["official"].sentences(c) for c in comps],
            "pysbd": lambda: [splitters["pysbd"].sentences(c) for c in comps],
        },
        args.repeats,
    )

    dev = f"{args.device}, {torch.get_num_threads()} threads, {args.repeats} repeats"
    print(f"\nVerifier benchmark ({'MiniLM-L6, 28 classes' if not args.verifier else args.verifier}; {dev})")
    print(f"{'measurement':<56}{'median':>10}{'best':>10}  unit")
    print("-" * 84)

    def rate(name: str, n: int, t: tuple[float, float]) -> None:
        print(f"{name:<56}{n / t[0]:>10.0f}{n / t[1]:>10.0f}  sentences/s")

    def ms(name: str, t: tuple[float, float]) -> None:
        print(f"{name:<56}{1000 * t[0]:>10.1f}{1000 * t[1]:>10.1f}  ms")

    rate(f"probs, batched 64, length-sorted ({len(sents)} sentences)", len(sents), t["sorted"])
    rate(f"probs, batched 64, unsorted ({len(sents)} sentences)", len(sents), t["unsorted"])
    rate(f"probs, one sentence at a time ({len(single)} sentences)", len(single), t["single"])
    ms(f"explanation_reward, 64 completions ({n_sent} sentences)", t["reward"])
    ms("  its verifier call alone", t["reward_verifier"])
    ms("  think extraction + official regex split, 64 completions", t["official"])
    ms("  think extraction + pysbd split, 64 completions", t["pysbd"])


if __name__ == "__main__":
    main()
