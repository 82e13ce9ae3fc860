"""ecr's GRPO loss against TRL 1.16.0's own code: the loss value and its gradients, case by case, in float64.

Why: docs/method.md §4 promises TRL's names and semantics for `loss_type`, `importance_sampling_level` (GSPO),
`top_entropy_quantile`, `entropy_coef` and the truncated importance-sampling modes. This script runs TRL's real
formula, not a re-implementation of it: `GRPOTrainer._compute_loss` on a trainer object built without a model,
whose `_get_per_token_logps_and_entropies` returns the test tensors (log-probs and entropies as leaves that take
gradients), and, for the sampler correction, the lines of `GRPOTrainer._generate_and_score_completions` that
compute vLLM's importance-sampling ratio, taken from the installed source and run as they are.

The ecr side is what `ecr.modules.grpo.GRPOModule` runs per micro-batch: `ecr.rl.loss.grpo_loss` with the
high-entropy mask (`ecr.rl.entropy.high_entropy_mask`) and the sampler weights
(`ecr.rl.off_policy.sampler_correction`) as `policy_weights`, minus `ecr.rl.entropy.entropy_bonus`, times
`ecr.rl.loss.accumulation_scale`.

Data (per seed): 8 completions of lengths 1..12 (one fully masked, as a masked truncated completion is, and a few
masked tokens inside others); old log-probs off the current ones by N(0, 0.3) per token plus N(0, 0.3) per
completion (μ > 1: token and sequence ratios fall outside the clip range); a reference and a sampler off by
N(0, 0.3) per token; N(0, 1) advantages; entropies in [0, 4) (float32 values, as a scorer computes them).
Printed: a markdown table of max |ecr − TRL| of the loss, of ∂loss/∂logp and of ∂loss/∂entropy per case over all
seeds. The exit status is 1 if any exceeds `--tol`, rows marked as a documented difference aside.

TRL is NOT a dependency of ecr: `benchmarks/setup_trl.sh` makes a separate venv (`benchmarks/.venv-trl`) that
sees ecr's packages and adds `trl==1.16.0`, and this script runs there (CPU, under a minute):

    ./benchmarks/setup_trl.sh && benchmarks/.venv-trl/bin/python benchmarks/check_trl_loss.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
import textwrap
from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from ecr.rl.entropy import entropy_bonus, high_entropy_mask
from ecr.rl.loss import ImportanceSamplingLevel, LossType, accumulation_scale, grpo_loss
from ecr.rl.off_policy import CorrectionMode, sampler_correction

N, C = 8, 12  # completions, max completion length
UNEVEN = (
    "documented: under dapo ecr weighs each micro-batch's entropy mean by its share of the step's tokens, "
    "TRL weighs micro-batches equally (method.md §4)"
)
TIE = (
    "documented: a float64 entropy exactly on the quantile (47 active tokens, ρ = 0.5): TRL compares it in float64 "
    "with its float32 quantile, ecr in float32; float32/bf16 entropies agree (benchmarks.md)"
)


@dataclass(frozen=True)
class Case:
    """One configuration, in TRL's GRPOConfig names (defaults: TRL's, except β and the bias-corrected KL)."""

    loss_type: LossType = "grpo"
    importance_sampling_level: ImportanceSamplingLevel = "token"
    beta: float = 0.0
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    use_bias_correction_kl: bool = False  # TRL 1.16 defaults to True; the paper's k3 KL is False
    top_entropy_quantile: float = 1.0
    entropy_coef: float = 0.0
    is_mode: CorrectionMode | None = None  # vllm_importance_sampling_mode (None: no correction)
    is_clip_min: float | None = None
    is_clip_max: float | None = 3.0
    accumulation: int = 1  # gradient_accumulation_steps = steps_per_generation; this is micro-batch 1 of them
    more_tokens: int = 0  # active tokens the other micro-batches hold beyond this one's count each
    float64_entropies: bool = False  # entropies float32 cannot represent (the data's are float32 values)
    note: str = ""  # a documented difference: printed, not counted in the exit status

    def label(self) -> str:
        parts = [self.loss_type, self.importance_sampling_level, f"β={self.beta:g}"]
        if self.epsilon_high != self.epsilon_low:
            parts.append(f"ε={self.epsilon_low:g}/{self.epsilon_high:g}")
        if self.use_bias_correction_kl:
            parts.append("use_bias_correction_kl")
        if self.top_entropy_quantile < 1:
            parts.append(f"top_entropy_quantile={self.top_entropy_quantile:g}")
        if self.entropy_coef:
            parts.append(f"entropy_coef={self.entropy_coef:g}")
        if self.is_mode:
            parts.append(f"{self.is_mode} [{self.is_clip_min}, {self.is_clip_max}]")
        if self.float64_entropies:
            parts.append("float64 entropies")
        if self.accumulation > 1:
            parts.append(
                f"accumulation {self.accumulation}" + (f", +{self.more_tokens} tokens" * bool(self.more_tokens))
            )
        return ", ".join(parts)


def cases() -> list[Case]:
    """The grid: loss_type × level × β, then one option at a time on top of it."""
    grid = [
        Case(loss_type=lt, importance_sampling_level=lvl, beta=b)
        for lt in ("grpo", "bnpo", "dr_grpo", "dapo")
        for lvl in ("token", "sequence")
        for b in (0.0, 0.04)
    ]
    extra = [Case(epsilon_high=0.28, beta=0.04), Case(epsilon_high=0.28, importance_sampling_level="sequence")]
    extra += [Case(loss_type=lt, beta=0.04, use_bias_correction_kl=True, importance_sampling_level=lvl)
              for lt in ("grpo", "dapo") for lvl in ("token", "sequence")]  # fmt: skip
    for lt in ("grpo", "bnpo", "dr_grpo", "dapo"):
        extra += [
            Case(loss_type=lt, beta=0.04, top_entropy_quantile=0.2),
            Case(loss_type=lt, beta=0.04, entropy_coef=0.01),
            Case(loss_type=lt, beta=0.04, top_entropy_quantile=0.2, entropy_coef=0.01),
            Case(loss_type=lt, beta=0.04, entropy_coef=0.01, accumulation=2),
        ]
    extra.append(Case(loss_type="dapo", beta=0.04, entropy_coef=0.01, accumulation=2, more_tokens=7, note=UNEVEN))
    for mode in ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask"):
        extra += [Case(beta=0.04, is_mode=mode), Case(beta=0.04, is_mode=mode, is_clip_min=0.5, is_clip_max=2.0)]
    extra.append(
        Case(importance_sampling_level="sequence", beta=0.04, is_mode="sequence_mask", top_entropy_quantile=0.5)
    )
    extra.append(Case(beta=0.04, top_entropy_quantile=0.5, float64_entropies=True, note=TIE))
    return grid + extra


def num_items(case: Case, mask: torch.Tensor) -> torch.Tensor:
    """The step's active tokens (dapo's normaliser): this micro-batch's, and the other micro-batches' as many
    plus `more_tokens`."""
    return mask.sum() * case.accumulation + case.more_tokens


def make_data(seed: int) -> dict[str, torch.Tensor]:
    """Random float64 tensors [N, C] (advantages [N]); see the module docstring."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([C, 1, 5, 12, 7, 3, 10, 9])  # [N]
    mask = (torch.arange(C)[None, :] < lengths[:, None]).double()  # [N, C]
    mask[3, [2, 6]] = 0.0  # tokens masked inside a completion (e.g. tool output)
    mask[6] = 0.0  # a fully masked completion (a masked truncated one)
    logp = -3.0 * torch.rand(N, C, generator=g, dtype=torch.float64)
    return dict(
        mask=mask,
        logp=logp,
        old=logp
        + 0.3 * torch.randn(N, C, generator=g, dtype=torch.float64)
        + 0.3 * torch.randn(N, 1, generator=g, dtype=torch.float64),
        ref=logp + 0.3 * torch.randn(N, C, generator=g, dtype=torch.float64),
        sampler=logp + 0.3 * torch.randn(N, C, generator=g, dtype=torch.float64),
        advantages=torch.randn(N, generator=g, dtype=torch.float64),
        entropy=(4.0 * torch.rand(N, C, generator=g)).double(),  # float32 values
    )


class _Accelerator:
    """One process, no accumulation boundary issues: what `_compute_loss` asks of `self.accelerator`."""

    num_processes = 1
    sync_gradients = True

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        return x

    gather_for_metrics = gather

    def reduce(self, x: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        return x

    def pad_across_processes(self, x: torch.Tensor, dim: int = 0, pad_index: float = 0) -> torch.Tensor:
        return x


def trl_trainer(case: Case, logp: torch.Tensor, entropy: torch.Tensor):  # -> trl.GRPOTrainer
    """A GRPOTrainer whose attributes are those `__init__` sets from a GRPOConfig of `case`, without a model."""
    from trl import GRPOTrainer

    t = object.__new__(GRPOTrainer)
    t.__dict__.update(
        loss_type=case.loss_type, importance_sampling_level=case.importance_sampling_level, beta=case.beta,
        epsilon_low=case.epsilon_low, epsilon_high=case.epsilon_high, max_completion_length=C,
        top_entropy_quantile=case.top_entropy_quantile, entropy_coef=case.entropy_coef, use_adaptive_entropy=False,
        _entropy_bonus_enabled=case.entropy_coef != 0.0, off_policy_mask_threshold=None, aux_loss_enabled=False,
        use_vllm=case.is_mode is not None, vllm_importance_sampling_correction=case.is_mode is not None,
        vllm_importance_sampling_mode=case.is_mode, vllm_importance_sampling_clip_min=case.is_clip_min,
        vllm_importance_sampling_clip_max=case.is_clip_max, current_gradient_accumulation_steps=case.accumulation,
        accelerator=_Accelerator(), model=SimpleNamespace(training=True),
        _metrics=defaultdict(lambda: defaultdict(list)),
        args=SimpleNamespace(use_bias_correction_kl=case.use_bias_correction_kl, delta=None,
                             steps_per_generation=case.accumulation),
    )  # fmt: skip
    t._get_per_token_logps_and_entropies = lambda *args, **kwargs: (logp, entropy, None)
    return t


def trl_is_ratio(trainer, old: torch.Tensor, sampler: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """vLLM's importance-sampling ratio, by the lines of `_generate_and_score_completions` that compute it."""
    from trl import GRPOTrainer

    source = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    start = source.index("            if self.use_vllm and self.vllm_importance_sampling_correction:\n")
    end = source.index("# Compute the per-token log probabilities for the reference model", start)
    scope = dict(self=trainer, completion_mask=mask, tool_mask=None, old_per_token_logps=old,
                 sampling_per_token_logps=sampler, torch=torch, math=math)  # fmt: skip
    exec(compile(textwrap.dedent(source[start:end]), "trl-is-ratio", "exec"), scope)
    return scope["vllm_importance_sampling_ratio"]


def trl_loss(case: Case, d: dict[str, torch.Tensor], logp: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
    """TRL's `_compute_loss` on the case's tensors (prompt of one token; the model is never called)."""
    trainer = trl_trainer(case, logp, entropy)
    inputs = dict(
        prompt_ids=torch.zeros(N, 1, dtype=torch.long), prompt_mask=torch.ones(N, 1, dtype=torch.long),
        completion_ids=torch.zeros(N, C, dtype=torch.long), completion_mask=d["mask"],
        advantages=d["advantages"], old_per_token_logps=d["old"],
        num_items_in_batch=num_items(case, d["mask"]),
    )  # fmt: skip
    if case.beta:
        inputs["ref_per_token_logps"] = d["ref"]
    if case.is_mode:
        inputs["importance_sampling_ratio"] = trl_is_ratio(trainer, d["old"], d["sampler"], d["mask"])
    return trainer._compute_loss(trainer.model, inputs)


def ecr_loss(case: Case, d: dict[str, torch.Tensor], logp: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
    """What GRPOModule backpropagates for this micro-batch (`_train_on_buffer`), from ecr's pure functions."""
    mask = d["mask"]
    keep = None
    if case.top_entropy_quantile < 1:
        keep = high_entropy_mask(entropy.detach(), mask, case.top_entropy_quantile).to(mask.dtype)
    weights = keep
    if case.is_mode:
        w, _ = sampler_correction(d["old"], d["sampler"], mask, case.is_mode, case.is_clip_max, case.is_clip_min)
        weights = w if keep is None else w * keep
    items = num_items(case, mask) if case.loss_type == "dapo" else None
    extra = {"use_bias_correction_kl": True} if case.use_bias_correction_kl else {}
    loss, _ = grpo_loss(
        logp, d["old"], d["ref"] if case.beta else None, d["advantages"], mask,
        loss_type=case.loss_type, importance_sampling_level=case.importance_sampling_level,
        epsilon_low=case.epsilon_low, epsilon_high=case.epsilon_high, beta=case.beta, max_completion_length=C,
        num_items_in_batch=items, policy_weights=weights, **extra,
    )  # fmt: skip
    loss = loss - entropy_bonus(entropy, mask, keep, case.entropy_coef, case.loss_type, items)
    return loss * accumulation_scale(case.loss_type, case.accumulation)


def differences(case: Case, d: dict[str, torch.Tensor]) -> tuple[float, float, float]:
    """max |ecr − TRL| of the loss, ∂/∂logp and ∂/∂entropy for one case and data set."""
    if case.float64_entropies:
        d = {**d, "entropy": d["entropy"] - 1e-12}  # float32 rounds it back up
    out = []
    for fn in (trl_loss, ecr_loss):
        logp = d["logp"].clone().requires_grad_(True)
        entropy = d["entropy"].clone().requires_grad_(True)
        loss = fn(case, d, logp, entropy)
        g_logp, g_ent = torch.autograd.grad(loss, (logp, entropy), allow_unused=True)
        g_ent = torch.zeros_like(entropy) if g_ent is None else g_ent
        out.append((loss.detach(), g_logp, g_ent))
    (lt, gt, et), (le, ge, ee) = out
    return float((lt - le).abs()), float((gt - ge).abs().max()), float((et - ee).abs().max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="random data sets per case")
    parser.add_argument("--tol", type=float, default=1e-6, help="largest |ecr − TRL| allowed (float64)")
    args = parser.parse_args()
    import trl

    print(f"ecr vs TRL {trl.__version__}, torch {torch.__version__}, float64, {args.seeds} seeds, N={N}, C={C}\n")
    print("| case | loss | ∂/∂logp | ∂/∂entropy | note |\n|---|---|---|---|---|")
    worst = 0.0
    for case in cases():
        diffs = [differences(case, make_data(seed)) for seed in range(args.seeds)]
        row = [max(col) for col in zip(*diffs)]
        if not case.note:
            worst = max(worst, *row)
        flag = "" if max(row) <= args.tol else " **differs**"
        print(f"| {case.label()}{flag} | {row[0]:.1e} | {row[1]:.1e} | {row[2]:.1e} | {case.note} |")
    print(f"\nworst max |ecr − TRL| (documented differences aside): {worst:.1e} (tolerance {args.tol:g})")
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
