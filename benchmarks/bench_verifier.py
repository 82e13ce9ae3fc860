"""Verifier throughput and the cost of the explanation reward (ERV), on the offline MiniLM student.

Measures, on the current device (CPU unless --device cuda):
  1. sentences/s of `HFVerifier.probs` batched as the reward calls it (length-sorted batches of 64);
  2. the same batches without length sorting (what a naive batched call pays in padding);
  3. one sentence at a time (what a per-sentence loop costs);
  4. `ExplanationReward` on 64 completions of ~6 sentences: total time per call and the verifier's share.

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

from ecr.data.synth import compose_explanation, profile_for
from ecr.labels import DFEW_LABELS, GOEMOTIONS_LABELS
from ecr.models.verifier import HFVerifier, build_student, load_verifier
from ecr.rl.rewards import ExplanationReward
from ecr.rl.sentences import split_official


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, best) wall time of `fn` in seconds after one warm-up call. On a shared machine the best run is
    the closer estimate of the code's own cost; the median shows what contention adds."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


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
    pool = [s for c in completions(args.sentences // 4 + 1, seed=1)[0] for s in split_official(c[7:c.index("</think>")])]
    sents = pool[: args.sentences]
    single = sents[:64]

    def unsorted() -> None:
        with torch.inference_mode():
            for i in range(0, len(sents), verifier.batch_size):
                verifier(sents[i : i + verifier.batch_size])

    t_batched = timed(lambda: verifier.probs(sents), args.repeats)
    t_unsorted = timed(unsorted, args.repeats)
    t_single = timed(lambda: [verifier.probs([s]) for s in single], max(1, args.repeats // 2))

    reward = ExplanationReward(verifier, "dfew")
    n_sent = sum(len(reward.sentences(c)[0]) for c in comps)
    t_reward = timed(lambda: reward(comps, labels), args.repeats)
    flat = [s for c in comps for s in reward.sentences(c)[0]]
    t_reward_verifier = timed(lambda: verifier.probs(flat), args.repeats)

    dev = f"{args.device}, {torch.get_num_threads()} threads, {args.repeats} repeats"
    print(f"\nVerifier benchmark ({'MiniLM-L6, 28 classes' if not args.verifier else args.verifier}; {dev})")
    print(f"{'measurement':<56}{'median':>10}{'best':>10}  unit")
    print("-" * 84)

    def rate(name: str, n: int, t: tuple[float, float]) -> None:
        print(f"{name:<56}{n / t[0]:>10.0f}{n / t[1]:>10.0f}  sentences/s")

    def ms(name: str, t: tuple[float, float]) -> None:
        print(f"{name:<56}{1000 * t[0]:>10.1f}{1000 * t[1]:>10.1f}  ms")

    rate(f"probs, batched 64, length-sorted ({len(sents)} sentences)", len(sents), t_batched)
    rate(f"probs, batched 64, unsorted ({len(sents)} sentences)", len(sents), t_unsorted)
    rate(f"probs, one sentence at a time ({len(single)} sentences)", len(single), t_single)
    ms(f"explanation_reward, 64 completions ({n_sent} sentences)", t_reward)
    ms("  its verifier call alone", t_reward_verifier)

if __name__ == "__main__":
    main()
