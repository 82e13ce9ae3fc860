"""Decoding throughput: clips/s for 8 frames + 16 kHz mono audio of a 3 s 224p clip.

Rows: `decode_clip` called directly, then through `ClipDataModule`'s DataLoader with 0/1/2 workers, and with
the on-disk cache warm. The clip is H.264 224x224 at 25 fps with 44.1 kHz stereo AAC, so the audio path
includes the down-mix and the resampling. Passes are timed after one untimed pass (workers persist); the
best of `--repeats` passes is reported.

    .venv/bin/python benchmarks/bench_decode.py [--clips 64] [--frames 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch


def make_clip(path: Path) -> Path:
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=224x224:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-ac",
            "2",
            "-t",
            "3",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(path),
        ],
        check=True,
    )
    return path


def timed_pass(loader) -> tuple[float, int]:  # noqa: ANN001
    t0 = time.perf_counter()
    n = sum(len(batch["ids"]) for batch in loader)
    return time.perf_counter() - t0, n


def best_rate(loader, repeats: int) -> float:  # noqa: ANN001
    """Best clips/s over `repeats` passes (on a shared machine the best pass is the least disturbed)."""
    rates = []
    for _ in range(repeats):
        secs, n = timed_pass(loader)
        rates.append(n / secs)
    return max(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from ecr.data import ClipDataModule, decode_clip

    with tempfile.TemporaryDirectory(prefix="ecr-bench-") as tmp:
        root = Path(tmp)
        clip = make_clip(root / "clip.mp4")
        # every row is a distinct file (hard links share the bytes but not the cache key's path)
        rows = []
        for i in range(args.clips):
            os.link(clip, root / f"c{i:03d}.mp4")
            rows.append({"id": f"c{i:03d}", "video": f"c{i:03d}.mp4", "label": "happy", "split": "train"})
        (root / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

        results: list[tuple[str, float]] = []
        decode_clip(clip, num_frames=args.frames)  # warm-up (library load)
        best = 0.0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for r in rows:
                decode_clip(root / r["video"], num_frames=args.frames)
            best = max(best, args.clips / (time.perf_counter() - t0))
        results.append(("decode_clip, in process", best))

        def datamodule(workers: int, cache: Path | None = None) -> ClipDataModule:
            dm = ClipDataModule(
                root=root,
                manifest=root / "m.jsonl",
                labels="dfew",
                batch_size=8,
                num_workers=workers,
                num_frames=args.frames,
                shuffle=False,
                val_fraction=0.0,
                cache_dir=cache,
            )
            dm.setup("fit")
            return dm

        for workers in (0, 1, 2):
            loader = datamodule(workers).train_dataloader()
            timed_pass(loader)  # untimed: starts the (persistent) workers
            results.append((f"DataLoader, {workers} worker(s)", best_rate(loader, args.repeats)))
        for workers in (0, 2):
            loader = datamodule(workers, root / "cache").train_dataloader()
            timed_pass(loader)  # fills the cache
            results.append((f"DataLoader, {workers} worker(s), cache warm", best_rate(loader, args.repeats)))

    print(
        f"\n{args.clips} clips, 3 s 224x224 H.264 + 44.1 kHz stereo AAC -> {args.frames} frames + 16 kHz mono"
        f" ({os.cpu_count()} CPUs, torch threads 1)"
    )
    width = max(len(k) for k, _ in results)
    print(f"{'setting':<{width}}  clips/s   ms/clip")
    for name, rate in results:
        print(f"{name:<{width}}  {rate:7.1f}  {1000 / rate:8.2f}")


if __name__ == "__main__":
    main()
