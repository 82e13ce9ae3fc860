"""Dynamic sampling (DAPO, Yu et al. 2025; docs/method.md §4): draw prompt batches until a step holds enough
groups whose rewards have spread.

A group whose G rewards are all equal has zero advantages and adds nothing to the gradient but its KL term.
With binary accuracy and format rewards many groups are all right or all wrong, so a plain step trains on
few informative groups. `fill_groups` keeps drawing (each draw = one prompt batch from the same resumable
sampler, sampled and scored like any rollout) and keeps only the groups with spread, until `target` of them
are held or `max_rounds` extra draws were made, or the epoch's prompts run out. Groups beyond the target are
dropped, as DAPO and verl do (`first_groups`). Under DDP every rank must make the same number of draws (the
sampler position is saved from one rank and the ranks' collectives must line up), so the decision to draw
again goes through `agree` (true on every rank when any rank still needs groups).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ecr.rl.rollout import Rollout


@dataclass(frozen=True)
class Filled:
    """What `fill_groups` drew and kept for one micro-batch."""

    kept: list[Rollout]  # the informative groups of each draw (draws with none left out), trimmed to target
    drawn: list[Rollout]  # every draw, whole (what the step logs as sampled)
    target: int  # groups wanted
    rounds: int  # draws made (1 = no resampling)
    exhausted: bool  # the epoch's prompts ran out while filling

    @property
    def num_kept(self) -> int:
        return sum(r.num_groups for r in self.kept)

    @property
    def short(self) -> bool:
        """Fewer informative groups than the target (the step trains on what there is)."""
        return self.num_kept < self.target


def local_agreement(need_more: bool) -> bool:
    """One process: no one else to ask."""
    return need_more


def fill_groups(
    draw: Callable[[], Rollout | None],
    *,
    max_rounds: int,
    target: int | None = None,
    agree: Callable[[bool], bool] = local_agreement,
) -> Filled:
    """Draw rollouts (`draw()`: the next prompt batch sampled and scored; None when the epoch is out of prompts)
    until `target` groups with reward spread are held or `max_rounds` draws beyond the first were made.
    `target` None: as many groups as the first draw has (the configured batch size; less in an epoch's last,
    partial batch).

    `agree(need_more)` turns this process's wish to draw again into the decision all processes take (DDP: any
    rank). A process that is out of prompts stops drawing; under DDP the ranks' shards have equal length
    (`EpochSampler` pads them), so they run out together.
    """
    if (target is not None and target < 1) or max_rounds < 0:
        raise ValueError(f"target must be >= 1 and max_rounds >= 0, got {target}, {max_rounds}")
    kept: list[Rollout] = []
    drawn: list[Rollout] = []
    held, exhausted = 0, False
    while True:
        rollout = draw()
        if rollout is None:
            exhausted = True
            break
        drawn.append(rollout)
        target = rollout.num_groups if target is None else target
        informative = rollout.keep_groups(~rollout.zero_std)
        if informative.num_groups and held < target:
            informative = informative.first_groups(target - held)
            kept.append(informative)
            held += informative.num_groups
        if len(drawn) > max_rounds or not agree(held < target):
            break
    return Filled(kept=kept, drawn=drawn, target=target or 0, rounds=len(drawn), exhausted=exhausted)
