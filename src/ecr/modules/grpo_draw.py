"""How `GRPOModule` draws one micro-batch from the training dataloader (docs/method.md §4).

The training step receives Lightning's dataloader iterator, not a batch, so that dynamic sampling can pull
more prompt batches within one step; each batch is moved to the device as Lightning would (precision
conversion, the before-transfer hook, the strategy's transfer) and turned into a rollout. Three modes:
- plain: one prompt batch, every group trained;
- `filter_zero_std_groups`: one prompt batch, the groups without reward spread dropped;
- `dynamic_sampling`: `ecr.rl.dynamic.fill_groups` draws until batch_size informative groups are held.
Under DDP, a rank left with nothing to train while another rank has groups trains an inert stand-in (no active
token) so that both reach the same gradient all-reduce; when no rank has anything, no rank buffers anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ecr.rl.dynamic import Filled, fill_groups
from ecr.rl.rollout import Rollout, sample_rollout, score_rollout

if TYPE_CHECKING:
    from ecr.modules.grpo import GRPOModule


@dataclass(frozen=True)
class MicroBatch:
    """One micro-batch's rollouts: what was sampled (logged) and what is trained (None: nothing on any rank)."""

    drawn: list[Rollout]
    trained: Rollout | None
    filled: Filled | None = None  # dynamic sampling's account of its draws


def next_rollout(module: GRPOModule, dataloader_iter: Iterator[Any]) -> Rollout | None:
    """The next prompt batch of the epoch sampled and rewarded, not yet scored (None when the epoch has no batch
    left): the log-prob passes run on the groups that are trained only (`score`)."""
    try:  # the step runs under the precision plugin's autocast; decoding and collating (a feature extractor's
        # STFT in bf16 fails) must not: Lightning fetches a batch before the step, outside it
        with torch.autocast(module.device.type, enabled=False):
            batch, _, _ = next(dataloader_iter)
    except StopIteration:
        return None
    trainer = module.trainer
    batch = trainer.precision_plugin.convert_input(batch)
    batch = module._on_before_batch_transfer(batch, dataloader_idx=0)
    batch = trainer.strategy.batch_to_device(batch, dataloader_idx=0)
    s = module.settings
    assert module.scorer is not None and module.reward is not None
    return sample_rollout(
        module.scorer,
        batch,
        module.reward,
        advantage_scale=s.scale_rewards,
        mask_truncated_completions=s.mask_truncated_completions,
    )


def score(module: GRPOModule, rollout: Rollout) -> Rollout:
    """The old / sampler / reference log-probs of the rows to be trained (`ecr.rl.rollout.score_rollout`)."""
    assert module.scorer is not None
    return score_rollout(module.scorer, rollout, need_old_logp=module.settings.num_iterations > 1)


def any_rank(module: GRPOModule, flag: bool) -> bool:
    """True on every rank when `flag` is true on any rank (a collective: every rank must call it)."""
    if module.trainer.world_size <= 1:
        return flag
    local = torch.tensor(float(flag), device=module.device)
    return bool(module.trainer.strategy.reduce(local, reduce_op="max") > 0)


def draw_micro_batch(module: GRPOModule, dataloader_iter: Iterator[Any]) -> MicroBatch:
    """One micro-batch in the module's mode (module docstring); raises StopIteration when the epoch is over."""
    s = module.settings
    filled = None
    if s.dynamic_sampling:
        filled = fill_groups(
            lambda: next_rollout(module, dataloader_iter),
            max_rounds=s.max_resample_rounds,
            agree=lambda need_more: any_rank(module, need_more),
        )
        drawn, kept = filled.drawn, filled.kept
        trained = Rollout.concat(kept).with_advantages(s.scale_rewards) if kept else None
    else:
        first = next_rollout(module, dataloader_iter)
        drawn = [first] if first is not None else []
        trained = first
        if first is not None and s.filter_zero_std_groups:
            trained = first.keep_groups(~first.zero_std)
            trained = trained if trained.num_groups else None
    if not drawn:
        raise StopIteration
    if not any_rank(module, trained is not None):
        return MicroBatch(drawn, None, filled)
    return MicroBatch(drawn, score(module, trained if trained is not None else drawn[0].inert()), filled)
