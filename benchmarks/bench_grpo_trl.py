"""ecr's GRPO stage vs TRL's GRPOTrainer on the same random text-only Qwen2 models, side by side in one process.

Same work for both: 8 prompts of the same rendered chat text (≈ 60 tokens) x G = 4 completions of exactly
`--tokens` tokens (`min_new_tokens`), β = 0.04 (a frozen reference copy: both full fine-tunes), fp32, loss
"grpo", one update per rollout, no gradient checkpointing, the same reward function, AdamW at the same lr.
Runs alternate (ecr, TRL, ecr, TRL, …) `--repeats` times per model size; each run trains `--steps` optimizer
steps and its first step is a warm-up. The table gives the median completions/s of each trainer, their ratio,
and where ecr's step time goes (generate / old+reference log-probs / reward / update) from its own timers.

TRL is NOT a dependency of ecr: `benchmarks/setup_trl.sh` makes a separate venv that sees ecr's packages and
adds `trl`, and this script runs there:

    ./benchmarks/setup_trl.sh && benchmarks/.venv-trl/bin/python benchmarks/bench_grpo_trl.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch

PROMPTS = 8
GROUP = 4


def vowel_share(completions, labels=None, **_) -> list[float]:
    """Same reward for both trainers (TRL passes completions as strings for a standard-format dataset)."""
    out = []
    for text in completions:
        letters = [c for c in text.lower() if c.isalpha()]
        out.append(sum(c in "aeiou" for c in letters) / max(1, len(letters)))
    return out


def text_rows(folder: Path) -> Path:
    from ecr.fixtures import synthesize, write_text_manifest

    manifest = synthesize(folder / "synth", num_clips=PROMPTS, labels="dfew", seed=0, size=32, duration=0.5)
    text = write_text_manifest(manifest)
    rows = [dict(json.loads(line), split="train") for line in text.read_text().splitlines()][:PROMPTS]
    text.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return text


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self.parts: list[dict[str, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self.t0)
        m = trainer.callback_metrics
        self.parts.append({k.rsplit("/", 1)[-1]: float(v) for k, v in m.items() if k.startswith("train/time/")})


def run_ecr(model: Path, rows: Path, steps: int, tokens: int, lr: float) -> tuple[list[float], list[dict]]:
    from ecr.data import TextDataModule
    from ecr.models import PolicyConfig
    from ecr.modules.grpo import GRPOModule
    from ecr.rl.rewards import CombinedReward, RewardSpec
    from ecr.rl.scorer import SamplingSettings

    policy = PolicyConfig(backbone="causal_lm", model=str(model), lora={"enabled": False})
    module = GRPOModule(
        policy, sampling=SamplingSettings(max_new_tokens=tokens, min_new_tokens=tokens), optimization={"lr": lr},
        grpo={"num_generations": GROUP, "beta": 0.04, "loss_type": "grpo", "max_grad_norm": 1.0,
              "log_completions_every_n_steps": 0},
    )  # fmt: skip
    module.reward = CombinedReward([RewardSpec("vowels", vowel_share)])
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, precision="32-true", max_steps=steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        callbacks=[timer],
    )  # fmt: skip
    data = TextDataModule(rows, labels="dfew", val_fraction=0.0, batch_size=PROMPTS, shuffle=False)
    trainer.fit(module, datamodule=data)
    return timer.times[1:], timer.parts[1:]


def rendered_prompts(model: Path, rows: Path) -> list[str]:
    """The exact prompt strings ecr's text collator builds (so TRL sees the same tokens)."""
    from ecr.data import TextDataModule
    from ecr.models import PolicyConfig, build_backbone

    bb = build_backbone(PolicyConfig(backbone="causal_lm", model=str(model)))
    data = TextDataModule(rows, labels="dfew", val_fraction=0.0, batch_size=PROMPTS, shuffle=False)
    data.setup()
    collator = bb.collator("generate")
    batch = collator([data.datasets["train"][i] for i in range(PROMPTS)])
    return bb.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=False)


def run_trl(model: Path, prompts: list[str], steps: int, tokens: int, lr: float, out: Path) -> list[float]:
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tok = AutoTokenizer.from_pretrained(model)
    pad = tok.pad_token
    clean = [p.replace(pad, "") for p in prompts]  # left padding is the collator's, TRL pads itself

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self.t0)

    config = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=PROMPTS * GROUP, num_generations=GROUP,
        max_completion_length=tokens, beta=0.04, loss_type="grpo", learning_rate=lr, max_grad_norm=1.0,
        max_steps=steps, use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
        logging_steps=1000, save_strategy="no", temperature=1.0, top_k=0, top_p=1.0,
        generation_kwargs={"min_new_tokens": tokens}, lr_scheduler_type="constant", warmup_steps=0,
        dataloader_num_workers=0, seed=0,
    )  # fmt: skip
    timer = Timer()
    trainer = GRPOTrainer(
        model=str(model), reward_funcs=vowel_share, args=config, train_dataset=Dataset.from_dict({"prompt": clean}),
        processing_class=tok, callbacks=[timer],
    )  # fmt: skip
    trainer.train()
    return timer.times[1:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["64x2", "256x4"], help="hidden x layers of the random Qwen2 LMs")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-5)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import trl

    from ecr.fixtures import build_tiny_causal_lm

    print(
        f"trl {trl.__version__}, torch threads {torch.get_num_threads()}, {PROMPTS} prompts x G={GROUP}, "
        f"{args.tokens} completion tokens, {args.steps} steps per run (first is warm-up), {args.repeats} repeats"
    )
    print(f"{'model':<8} {'ecr compl/s':>12} {'TRL compl/s':>12} {'ratio':>6}   ecr step split (median s)")
    with tempfile.TemporaryDirectory() as tmp:
        rows = text_rows(Path(tmp))
        for size in args.sizes:
            hidden, layers = (int(x) for x in size.split("x"))
            model = build_tiny_causal_lm(Path(tmp) / size, hidden_size=hidden, num_layers=layers)
            prompts = rendered_prompts(model, rows)
            ecr_times, trl_times, parts = [], [], []
            for rep in range(args.repeats):
                torch.manual_seed(rep)
                t, split = run_ecr(model, rows, args.steps, args.tokens, args.lr)
                ecr_times += t
                parts += split
                torch.manual_seed(rep)
                trl_times += run_trl(model, prompts, args.steps, args.tokens, args.lr, Path(tmp) / f"trl{rep}")
            e, t = PROMPTS * GROUP / statistics.median(ecr_times), PROMPTS * GROUP / statistics.median(trl_times)
            keys = sorted({k for d in parts for k in d})
            split = ", ".join(f"{k} {statistics.median(d.get(k, 0.0) for d in parts):.3f}" for k in keys)
            print(f"{size:<8} {e:>12.1f} {t:>12.1f} {e / t:>5.2f}x   {split}")


if __name__ == "__main__":
    main()
