"""What a GRPO step logs besides the rollouts' `ecr.rl.rollout.rollout_metrics`: the trained part of a
micro-batch (zero-spread share, informative completions, dynamic sampling's draws) and the completion table
written to TensorBoard."""

from __future__ import annotations

from ecr.modules.grpo_draw import MicroBatch
from ecr.rl.rollout import Rollout
from ecr.rows import markdown_table


def completion_table(r: Rollout) -> str:
    """A markdown table of a rollout's completions: clip, label, text, each reward term, advantage."""
    terms = list(r.rewards.terms)
    rows = [
        [r.clip_ids[i], r.labels[i], r.texts[i], *[f"{r.rewards.terms[t][i]:.2f}" for t in terms],
         f"{float(r.advantages[i]):.2f}"]
        for i in range(len(r.texts))
    ]  # fmt: skip
    return markdown_table(["clip", "label", "completion", *terms, "advantage"], rows)


def trained_metrics(micro: MicroBatch, short_steps: int) -> dict[str, float]:
    """What the trained part of a micro-batch logs beside the drawn rollouts' `rollout_metrics`: the share of
    zero-spread groups left in it, its informative completions and, with dynamic sampling, the draws made, the
    groups kept, whether the step came up short and `short_steps`, the run's count of short steps so far."""
    trained = micro.trained
    informative = 0  # completions of groups with spread that have an active token (an inert stand-in: none)
    if trained is not None:
        spread = (~trained.zero_std).repeat_interleave(trained.group_size)  # [N]
        informative = int((spread & trained.mask.bool().any(-1).to(spread.device)).sum())
    values = {
        "train/frac_zero_std_trained": float(trained.zero_std.float().mean()) if trained is not None else 1.0,
        "train/informative_completions": float(informative),
    }
    for name in ("old_logp", "reference"):  # the log-prob passes ran once, on the trained rows
        if trained is not None and name in trained.timings:
            values[f"train/time/{name}"] = trained.timings[name]
    if micro.filled is not None:
        f = micro.filled
        values.update({
            "train/dynamic/rounds": float(f.rounds),
            "train/dynamic/groups": float(f.num_kept),
            "train/dynamic/short": float(f.short),
            "train/dynamic/short_steps": float(short_steps),
        })  # fmt: skip
    return values
