"""GRPO step time: media encoded once per prompt (ecr) vs re-encoded per completion (the paper's code path).

One step on B prompts with G completions each, on the synthetic dataset's clips (pre-decoded tensors: no FFmpeg
needed) at the processor's default frame size (max 448 x 448 pixels: realistic media-token counts), LoRA on the
tiny Qwen2.5-Omni thinker, or (`--lm qwen2.5-omni-3b`) on a random thinker whose language model has
Qwen2.5-Omni-3B's shape (36 layers, hidden 2048, vocab 151,936; towers tiny; no weights needed) on a GPU:
- `ecr`: `encode_prompt` once per prompt batch, G samples per prompt in ONE `generate` call that prefills each
  prompt once and decodes its G completions from that KV cache (`group_size=G`), policy log-probs (with
  backward) and adapter-disabled reference log-probs on the same encoding, each prompt run once per group with
  its KV cache shared by the G completions (`shared_prefix`);
- `ecr-repeated`: the same, but sampling on the prompt repeated G times (each prompt prefilled G times), as
  before the shared prefill: the difference is what sharing the generation prefill saves;
- `per-completion`: what the official code did — for every completion its own encoder run + `generate`, an
  encoder run + forward/backward per completion for the policy log-probs, and one for the reference: 2G+1
  encoder runs per prompt.
Both generate exactly `--tokens` tokens (`min_new_tokens`), are interleaved within one process (ecr, peer,
...) after a warm-up, and the table reports median seconds per step and of its `generate` call, the speed-up
over the per-completion path, and the vision/audio tower runs per step counted with forward hooks.

    .venv/bin/python benchmarks/bench_grpo.py [--prompts 2] [--groups 4 8] [--tokens 32] [--repeats 3]
        [--lm tiny|qwen2.5-omni-3b] [--device cpu|cuda] [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ecr.fixtures import build_tiny_omni, synth_samples
from ecr.fixtures.tiny_models import QWEN25_OMNI_3B_LM
from ecr.models import PolicyConfig, load_policy

LM_SHAPES = {"tiny": None, "qwen2.5-omni-3b": QWEN25_OMNI_3B_LM}


def samples(n: int, frames: int, size: int) -> list[dict]:
    """`n` pre-decoded synthetic clips (ClipSample dicts) of 2 s with `frames` frames of `size` x `size`."""
    return synth_samples(n, labels="dfew", seed=0, num_frames=frames, size=size, duration=2.0)


def ecr_step(bb, batch, group: int, tokens: int, share_prefill: bool = True) -> float:
    """One ecr step; returns the seconds spent in `generate`."""
    gen = {"do_sample": True, "max_new_tokens": tokens, "min_new_tokens": tokens}
    with torch.no_grad():
        encoded = bb.encode_prompt(batch).detach()  # [B]
        t0 = time.perf_counter()
        ids = bb.generate(encoded, group_size=group, share_prefix=share_prefill, **gen)  # [B·G, C], eval mode
        seconds = time.perf_counter() - t0
    mask = torch.ones_like(ids)
    bb.score_completions(encoded, ids, mask, group_size=group).logprobs.sum().backward()
    with torch.no_grad(), bb.adapter_disabled():
        bb.score_completions(encoded, ids, mask, group_size=group)
    return seconds


def repeated_prefill_step(bb, batch, group: int, tokens: int) -> float:
    return ecr_step(bb, batch, group, tokens, share_prefill=False)


def per_completion_step(bb, batch, group: int, tokens: int) -> float:
    """The paper's code path; returns the seconds spent in `generate`."""
    gen = {"do_sample": True, "max_new_tokens": tokens, "min_new_tokens": tokens}
    seconds = 0.0
    rows = batch["input_ids"].shape[0]
    for i in range(rows):
        one = {k: (v[i : i + 1] if torch.is_tensor(v) and v.shape[0] == rows else v) for k, v in batch.items()}
        if "pixel_values_videos" in batch:  # flattened patches: take this clip's share
            per = batch["video_grid_thw"].prod(-1)
            start = int(per[:i].sum())
            one["pixel_values_videos"] = batch["pixel_values_videos"][start : start + int(per[i])]
        completions = []
        for _ in range(group):  # one encoder run per sampled completion
            with torch.no_grad():
                bb.model.eval()
                encoded = bb.encode_prompt(one)
                t0 = time.perf_counter()
                completions.append(bb.generate(encoded, **gen))
                seconds += time.perf_counter() - t0
                bb.model.train()
        for ids in completions:  # one encoder run per completion's policy log-probs
            bb.token_logprobs(bb.encode_prompt(one), ids, torch.ones_like(ids)).sum().backward()
        with torch.no_grad(), bb.adapter_disabled():  # and one for the reference
            ids = torch.cat(completions)
            bb.token_logprobs(bb.encode_prompt(one).repeat_interleave(group), ids, torch.ones_like(ids))
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=2, help="prompts (clips) per step")
    p.add_argument("--groups", type=int, nargs="+", default=[4, 8], help="values of G to measure")
    p.add_argument("--tokens", type=int, default=32, help="completion tokens (forced)")
    p.add_argument("--frames", type=int, default=8, help="frames decoded per clip")
    p.add_argument("--size", type=int, default=448, help="synthetic frame size in pixels")
    p.add_argument("--hidden", type=int, default=64, help="hidden size of the tiny Omni")
    p.add_argument("--repeats", type=int, default=3, help="measured rounds after a warm-up")
    p.add_argument("--lm", choices=sorted(LM_SHAPES), default="tiny", help="language model shape (towers stay tiny)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--dtype", default="float32", help="policy dtype: float32 | bfloat16")
    args = p.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        with torch.device(args.device):  # random init on the target device (a 3B LM initialises fast on a GPU)
            model = build_tiny_omni(Path(tmp) / "tiny", hidden_size=args.hidden, text=LM_SHAPES[args.lm],
                                    dtype=args.dtype)  # fmt: skip
        clips = samples(args.prompts, args.frames, args.size)
        bb = load_policy(PolicyConfig(model=str(model), dtype=args.dtype, lora={"r": 8, "dropout": 0.0}), args.device)
        bb.model.to(args.device)
        batch = {k: v.to(args.device) if torch.is_tensor(v) else v for k, v in bb.collator("generate")(clips).items()}
        thinker = bb.base_model
        runs = {"n": 0}
        thinker.model.visual.register_forward_hook(lambda *_: runs.__setitem__("n", runs["n"] + 1))
        media = int((batch["input_ids"] == thinker.config.video_token_id).sum(-1)[0])
        audio = int((batch["input_ids"] == thinker.config.audio_token_id).sum(-1)[0])
        lm = bb.base_model.config.text_config
        print(f"Omni LM {args.lm} ({lm.num_hidden_layers} x {lm.hidden_size}), towers {args.hidden}, {args.dtype} "
              f"on {args.device}, {args.prompts} prompts, {media} video + {audio} audio tokens per "
              f"prompt, {args.tokens} completion tokens, LoRA r=8, CPU threads {torch.get_num_threads()}")  # fmt: skip
        print(f"{'G':>3} {'path':<16} {'median s/step':>14} {'generate s':>11} {'tower runs/step':>16} {'speed-up':>9}")
        for group in args.groups:
            steps = {"ecr": ecr_step, "ecr-repeated": repeated_prefill_step, "per-completion": per_completion_step}
            times: dict[str, list[float]] = {name: [] for name in steps}
            gen_times: dict[str, list[float]] = {name: [] for name in steps}
            counts: dict[str, int] = {}
            for rep in range(args.repeats + 1):  # the first round is a warm-up
                for name, step in steps.items():
                    bb.model.zero_grad(set_to_none=True)
                    runs["n"] = 0
                    torch.manual_seed(rep)
                    t0 = time.perf_counter()
                    generate_s = step(bb, batch, group, args.tokens)
                    if args.device.startswith("cuda"):
                        torch.cuda.synchronize()
                    if rep:
                        times[name].append(time.perf_counter() - t0)
                        gen_times[name].append(generate_s)
                    counts[name] = runs["n"]
            med = {k: statistics.median(v) for k, v in times.items()}
            for name in steps:
                ratio = med["per-completion"] / med[name]
                gen_med = statistics.median(gen_times[name])
                print(f"{group:>3} {name:<16} {med[name]:>14.3f} {gen_med:>11.3f} {counts[name]:>16d} {ratio:>8.2f}x")


if __name__ == "__main__":
    main()
