"""Peak memory of a GRPO step: policy only (β = 0) vs reference from the adapter-disabled policy vs a frozen copy.

Each mode runs in its own subprocess (peak memory is per process): load the LoRA policy (and, for `copy`, a
second full model), then one step — encode once, sample G completions per prompt, policy log-probs with
backward, and the reference log-probs of the mode. On CUDA the figure is `torch.cuda.max_memory_allocated`;
on CPU the growth of the process's peak RSS over its RSS before the first model load. Target: the
adapter-disabled reference costs at most 1.1x the policy-only step (no second copy of the weights).

    .venv/bin/python benchmarks/bench_grpo_memory.py [--hidden 512] [--layers 8] [--group 4] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

MODES = ("policy", "adapter", "copy")


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def run_mode(mode: str, model: str, clips: str, group: int, tokens: int, device: str) -> dict[str, float]:
    from bench_grpo import samples

    from ecr.models import PolicyConfig, build_backbone, load_policy

    small = {"min_pixels": 3136, "max_pixels": 3136}  # small frames: the weights, not the activations, dominate
    config = PolicyConfig(model=model, lora={"r": 8, "dropout": 0.0}, inputs=small)
    batch_clips = samples(2, 8, 224)
    base = _rss_mb()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    bb = load_policy(config, device)
    bb.model.to(device)
    ref = None
    if mode == "copy":
        ref = build_backbone(PolicyConfig(model=model, lora={"enabled": False}, inputs=small))
        ref.load(device).to(device).requires_grad_(False).eval()
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in bb.collator("generate")(batch_clips).items()}
    with torch.no_grad():
        prompt = bb.encode_prompt(batch).detach()  # [B]
        kw = {"do_sample": True, "max_new_tokens": tokens, "min_new_tokens": tokens}
        ids = bb.generate(prompt, group_size=group, share_prefix=False, **kw)  # [B·G, C]
    mask = torch.ones_like(ids)
    bb.score_completions(prompt, ids, mask, group_size=group).logprobs.sum().backward()
    with torch.no_grad():
        if mode == "adapter":
            with bb.adapter_disabled():
                bb.score_completions(prompt, ids, mask, group_size=group)
        elif mode == "copy":
            ref.score_completions(ref.encode_prompt(batch), ids, mask, group_size=group)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base  # Linux: KiB
    return {"peak_mb": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--worker", nargs=3, metavar=("MODE", "MODEL", "CLIPS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        mode, model, clips = args.worker
        print(json.dumps(run_mode(mode, model, clips, args.group, args.tokens, args.device)))
        return
    from ecr.fixtures import build_tiny_omni

    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_omni(Path(tmp) / "tiny", hidden_size=args.hidden, num_layers=args.layers)
        clips = Path(tmp) / "clips"
        results = {}
        for mode in MODES:
            cmd = [sys.executable, __file__, "--worker", mode, str(model), str(clips), "--group", str(args.group),
                   "--tokens", str(args.tokens), "--device", args.device]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).parent)
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]
        print(f"tiny Omni {args.hidden} x {args.layers} layers, G={args.group}, {args.tokens} tokens, {args.device}")
        print(f"{'reference':<10} {'peak MiB':>10} {'vs policy':>10}")
        for mode in MODES:
            print(f"{mode:<10} {results[mode]:>10.1f} {results[mode] / results['policy']:>9.2f}x")


if __name__ == "__main__":
    main()
