"""Say so when GRPO learns nothing: every group's rewards have zero spread, so every advantage is 0.

With all G completions of every prompt scoring the same (`train/frac_zero_std` 1), the GRPO loss and its
gradient are 0 (only the KL term moves the policy) and a run can spend all its steps doing nothing while
printing nothing. `ZeroSpreadMonitor` counts consecutive such rollouts and returns one console warning, with
the likely causes, after `patience` of them; a rollout with any spread resets the count (and re-arms it).
"""

from __future__ import annotations

from dataclasses import dataclass

ZERO_SPREAD_PATIENCE = 10  # consecutive rollouts with frac_zero_std == 1 before the warning


@dataclass
class ZeroSpreadMonitor:
    """Counts rollouts whose groups all have zero reward spread (see module docstring)."""

    patience: int = ZERO_SPREAD_PATIENCE
    run: int = 0  # consecutive all-zero-spread rollouts so far
    warned: bool = False

    def update(self, frac_zero_std: float, *, num_generations: int, temperature: float) -> str | None:
        """Feed one rollout's `train/frac_zero_std`; returns the warning text once per stretch, else None."""
        if frac_zero_std < 1.0:
            self.run, self.warned = 0, False
            return None
        self.run += 1
        if self.run < self.patience or self.warned:
            return None
        self.warned = True
        return (
            f"GRPO: for {self.run} steps in a row every group's rewards had zero spread (train/frac_zero_std = 1): "
            "all advantages are 0 and the policy does not learn. Likely causes: sampling too deterministic "
            f"(temperature {temperature}: raise it), too few completions per prompt (G = {num_generations}: raise "
            "num_generations), rewards that cannot differ within a group (binary or saturated terms: check the "
            "reward weights/scale and train/reward/* in TensorBoard); filter_zero_std_groups: true skips such "
            "groups instead of training on zero advantages (dynamic sampling)."
        )
