"""One GRPO optimizer step on a fixed global batch, for the distributed-equivalence test (run as a script).

    python grpo_equivalence_worker.py TINY CLIPS OUT --devices N --batch-size B --accumulation A --loss-type T
        [--manifest FILE] [--train-vision] [--filter-zero-std] [--flat-label LABEL]
        [--dynamic-sampling] [--max-resample-rounds R]

Sampling is replaced by completions that are a pure function of (clip id, index in its group), so runs that
split the same 4 prompts differently (1 process x 1 micro-batch, 1 process x 2 micro-batches, 2 DDP processes)
see identical rollouts; only the loss normalisation, gradient accumulation and DDP averaging differ, and the
update must not. SGD makes the update proportional to the gradient (Adam's first step would hide a scale
error). Lightning's DDP launcher re-runs this script for rank 1, so the patches below apply on every rank.
`--flat-label` gives every completion of a clip with that label the same reward (a zero-spread group), and
`--train-vision` trains the vision tower, so each update pass re-encodes the prompts. `--dynamic-sampling`
draws further prompt batches within the one step until a batch of groups with spread is held.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import sys
from pathlib import Path

import lightning as L
import torch

import ecr.modules.grpo as grpo
import ecr.modules.grpo_draw as grpo_draw
from ecr.data import ClipDataModule
from ecr.models import PolicyConfig
from ecr.models.hf import HFBackbone
from ecr.modules.wiring import connect
from ecr.rl.rewards import CombinedReward, RewardSpec
from ecr.rl.scorer import SamplingSettings

GROUP = 4
LENGTH = 6
_current_ids: list[str] = []


def fake_generate(self, prompt, *, group_size: int = 1, **kwargs) -> torch.Tensor:
    """Completion ids [N, LENGTH] from (clip id, row index in the group); an EOS ends some rows early."""
    rows = []
    eos = self.tokenizer.eos_token_id
    for row in range(prompt.input_ids.shape[0] * group_size):  # group_size > 1: one prompt row per group
        clip = _current_ids[row // GROUP]
        seed = int(hashlib.sha256(f"{clip}:{row % GROUP}".encode()).hexdigest()[:8], 16)
        ids = torch.randint(11, 900, (LENGTH,), generator=torch.Generator().manual_seed(seed))
        if row % GROUP == 1:
            ids[3] = eos
            ids[4:] = self.tokenizer.pad_token_id
        rows.append(ids)
    return torch.stack(rows).to(prompt.input_ids.device)


_real_sample = grpo_draw.sample_rollout


def sample_with_ids(backbone, batch, reward, **kwargs):
    _current_ids[:] = list(batch["meta"]["ids"])
    return _real_sample(backbone, batch, reward, **kwargs)


def vowel_share(completions, labels, flat_label: str | None = None) -> list[float]:
    out = []
    for text, label in zip(completions, labels, strict=True):
        letters = [c for c in text.lower() if c.isalpha()]
        out.append(0.5 if label == flat_label else sum(c in "aeiou" for c in letters) / max(1, len(letters)))
    return out


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("tiny")
    p.add_argument("clips")
    p.add_argument("out")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--accumulation", type=int, default=1)
    p.add_argument("--loss-type", default="grpo")
    p.add_argument("--importance-sampling-level", default="token")
    p.add_argument("--top-entropy-quantile", type=float, default=1.0)
    p.add_argument("--entropy-coef", type=float, default=0.0)
    p.add_argument("--manifest", default="manifest.jsonl")
    p.add_argument("--train-vision", action="store_true")
    p.add_argument("--filter-zero-std", action="store_true")
    p.add_argument("--flat-label", default=None)
    p.add_argument("--dynamic-sampling", action="store_true")
    p.add_argument("--max-resample-rounds", type=int, default=4)
    a = p.parse_args(argv)
    HFBackbone.generate = fake_generate  # type: ignore[method-assign]
    grpo_draw.sample_rollout = sample_with_ids  # type: ignore[assignment]
    torch.set_num_threads(1)
    L.seed_everything(0)
    policy = PolicyConfig(
        model=a.tiny, lora={"r": 4, "dropout": 0.0}, inputs={"min_pixels": 3136, "max_pixels": 3136},
        freeze_vision=not a.train_vision,
    )  # fmt: skip
    module = grpo.GRPOModule(
        policy,
        sampling=SamplingSettings(max_new_tokens=LENGTH),
        grpo={
            "num_generations": GROUP,
            "loss_type": a.loss_type,
            "importance_sampling_level": a.importance_sampling_level,
            "top_entropy_quantile": a.top_entropy_quantile,
            "entropy_coef": a.entropy_coef,
            "beta": 0.04,
            "gradient_accumulation_steps": a.accumulation,
            "max_grad_norm": None,
            "log_completions_every_n_steps": 0,
            "filter_zero_std_groups": a.filter_zero_std,
            "dynamic_sampling": a.dynamic_sampling,
            "max_resample_rounds": a.max_resample_rounds,
        },
        optimizer=lambda params: torch.optim.SGD(params, lr=0.5),
    )
    module.reward = CombinedReward([RewardSpec("vowels", functools.partial(vowel_share, flat_label=a.flat_label))])
    data = ClipDataModule(
        a.clips, format="custom", manifest=str(Path(a.clips) / a.manifest), labels="dfew", num_frames=4,
        batch_size=a.batch_size, val_fraction=0.0, num_workers=0, on_error="raise", shuffle=False,
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu", devices=a.devices, strategy="ddp" if a.devices > 1 else "auto", max_steps=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0,
    )  # fmt: skip
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.model.named_parameters() if p.requires_grad}
    trainer.fit(module, datamodule=connect(module, data))
    if trainer.is_global_zero:
        after = {n: p.detach().cpu() for n, p in module.model.named_parameters() if p.requires_grad}
        torch.save({"before": before, "after": after}, a.out)


if __name__ == "__main__":
    main(sys.argv[1:])
