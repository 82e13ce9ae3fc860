"""SFT step time and peak memory of the tiny Qwen2.5-Omni thinker: two sizes x (fp32 full fine-tune, 8-bit + LoRA).

One "step" = collated batch -> forward (loss on the assistant tokens) -> backward -> AdamW step, on real
synthetic clips (decoded once, collated once; the collator's cost is reported separately). Each
configuration runs in a fresh subprocess. Peak memory: on CUDA `torch.cuda.max_memory_allocated`; on CPU the
growth of the process's peak RSS (`resource.getrusage` max RSS) over its RSS just before the model is loaded
(tracemalloc does not see tensor storage, so it is reported only as the Python-side peak).

    .venv/bin/python benchmarks/bench_sft.py [--steps 10] [--batch-size 4] [--frames 8] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch

from ecr.data import decode_clip
from ecr.fixtures import synthesize
from ecr.fixtures.synth import MANIFEST_NAME
from ecr.fixtures.tiny_models import build_tiny_omni, count_parameters
from ecr.labels import get_label_set
from ecr.models import PolicyConfig, load_policy


def load_samples(root: Path, n: int, frames: int, synth: bool = True) -> list[dict]:
    manifest = (
        synthesize(root, num_clips=n, labels="dfew", seed=0, size=112, duration=2.0) if synth else root / MANIFEST_NAME
    )
    labels = get_label_set("dfew")
    out = []
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        clip = decode_clip(root / row["video"], num_frames=frames)
        out.append({"id": row["id"], "label": row["label"], "label_id": labels.index(row["label"]),
                    "explanation": row["explanation"], "frames": clip.frames, "frame_times": clip.frame_times,
                    "audio": clip.audio, "sample_rate": clip.sample_rate, "duration": clip.duration})  # fmt: skip
    return out


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def bench(model_dir: Path, samples: list[dict], *, quant: str, steps: int, device: str, pixels: int) -> dict:
    lora = {"enabled": quant != "none", "r": 8, "alpha": 16, "dropout": 0.0}
    cfg = PolicyConfig(model=str(model_dir), quantization=quant, lora=lora,
                       inputs={"min_pixels": pixels, "max_pixels": pixels})  # fmt: skip
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    rss0 = rss_mb()
    tracemalloc.start()
    backbone = load_policy(cfg, device=device)
    model = backbone.model.to(device) if quant == "none" else backbone.model
    collator = backbone.collator("train")
    t0 = time.perf_counter()
    batch = collator(samples)
    collate_s = time.perf_counter() - t0
    batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    times = []
    for i in range(steps + 2):  # two warm-up steps
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        loss, _ = backbone.loss(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t)
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    row = {
        "trainable": sum(p.numel() for p in params),
        "step_ms": 1000 * statistics.median(times),
        "step_ms_min": 1000 * min(times),
        "collate_ms": 1000 * collate_s,
        "tokens": int(batch["attention_mask"].sum()),
        "loss": float(loss),
    }
    if device == "cuda":
        row["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        row["peak_mb"] = max_rss_mb() - rss0
        row["py_peak_mb"] = py_peak / 2**20
    del backbone, model, opt, batch
    return row


def run_one(spec: dict) -> dict:
    """Child process: decode the clips, run one configuration, return its row."""
    torch.manual_seed(0)
    samples = load_samples(Path(spec["clips"]), spec["batch_size"], spec["frames"], synth=False)
    return bench(Path(spec["model"]), samples, quant=spec["quant"], steps=spec["steps"], device=spec["device"],
                 pixels=spec["pixels"])  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--pixels", type=int, default=112 * 112, help="pixels per frame after resizing")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: JSON spec of one child run
    args = ap.parse_args()
    if args.one:
        print("ROW " + json.dumps(run_one(json.loads(args.one))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clips = Path(tmp) / "clips"
        synthesize(clips, num_clips=args.batch_size, labels="dfew", seed=0, size=112, duration=2.0)
        for hidden in args.sizes:
            model_dir = build_tiny_omni(Path(tmp) / f"tiny{hidden}", hidden_size=hidden)
            n_params = count_parameters(model_dir)
            for quant in ("none", "8bit"):
                spec = {"clips": str(clips), "model": str(model_dir), "quant": quant, "steps": args.steps,
                        "device": args.device, "pixels": args.pixels, "batch_size": args.batch_size,
                        "frames": args.frames}  # fmt: skip
                out = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True,
                                     text=True, check=True).stdout  # fmt: skip
                row = json.loads(next(line[4:] for line in out.splitlines() if line.startswith("ROW ")))
                mode = "fp32 full" if quant == "none" else "8-bit + LoRA r8"
                rows.append({"hidden": hidden, "params": n_params, "mode": mode, **row})
    print(
        f"\nSFT step on {args.device} (torch threads {torch.get_num_threads()}), batch {args.batch_size} clips x "
        f"{args.frames} frames @ {args.pixels} px + 2 s audio, median of {args.steps} steps after 2 warm-up\n"
    )
    mem = "peak MiB (CUDA alloc)" if args.device == "cuda" else "peak RSS growth MiB"
    head = f"| hidden | params | mode | trainable | tokens | step ms (median / min) | collate ms | {mem} |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        print(
            f"| {r['hidden']} | {r['params']:,} | {r['mode']} | {r['trainable']:,} | {r['tokens']} | "
            f"{r['step_ms']:.1f} / {r['step_ms_min']:.1f} | {r['collate_ms']:.0f} | {r['peak_mb']:.1f} |"
        )


if __name__ == "__main__":
    main()
