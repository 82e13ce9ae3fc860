"""`ZeroSpreadMonitor`: one warning after `patience` rollouts in a row whose groups all have zero reward spread."""

from __future__ import annotations

from ecr.rl.spread import ZeroSpreadMonitor


def test_warns_once_after_patience_and_rearms_after_a_rollout_with_spread() -> None:
    m = ZeroSpreadMonitor(patience=3)
    feed = lambda f: m.update(f, num_generations=4, temperature=0.7)  # noqa: E731
    assert [feed(1.0), feed(1.0)] == [None, None]
    warning = feed(1.0)
    assert warning is not None and "3 steps in a row" in warning
    assert all(s in warning for s in ("temperature 0.7", "G = 4", "reward", "filter_zero_std_groups"))
    assert feed(1.0) is None  # once per stretch
    assert feed(0.5) is None and m.run == 0  # some spread: the count restarts
    assert [feed(1.0), feed(1.0), feed(1.0) is not None] == [None, None, True]
