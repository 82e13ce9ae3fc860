"""Group advantages against hand-computed values; zero-spread groups give exact zeros, never NaN."""

from __future__ import annotations

import pytest
import torch

from ecr.errors import ConfigError
from ecr.rl.advantages import group_advantages, zero_std_groups


def close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype))


def test_group_scale_is_the_papers_unbiased_group_std() -> None:
    # group [1, 0]: mean 0.5, unbiased std sqrt(0.5); group [0, 1, 2] (G=3 below) has std 1.
    rewards = torch.tensor([1.0, 0.0, 3.0, 1.0], dtype=torch.float64)
    a = 0.5 / (0.5**0.5 + 1e-4)
    b = 1.0 / (2.0**0.5 + 1e-4)  # group [3, 1]: mean 2, std sqrt(2)
    close(group_advantages(rewards, 2), [a, -a, b, -b])
    close(group_advantages(torch.tensor([0.0, 1.0, 2.0]), 3), [-1 / 1.0001, 0.0, 1 / 1.0001])


def test_batch_and_none_scales() -> None:
    rewards = torch.tensor([0.0, 1.0, 2.0, 5.0, 5.0, 5.0], dtype=torch.float64)
    # batch mean 3, squared deviations 9+4+1+4+4+4 = 26, unbiased variance 26/5 = 5.2.
    s = 5.2**0.5 + 1e-4
    close(group_advantages(rewards, 3, scale="batch"), [-1 / s, 0.0, 1 / s, 0.0, 0.0, 0.0])
    close(group_advantages(rewards, 3, scale="none"), [-1.0, 0.0, 1.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_zero_spread_groups_and_group_size_one_give_exact_zeros(scale: str) -> None:
    # mean(0.1, 0.1, 0.1) is not exactly 0.1 in float32: the zeros must not be rounding noise / eps.
    equal = torch.full((6,), 0.1)
    assert torch.equal(group_advantages(equal, 3, scale=scale), torch.zeros(6))
    singles = torch.tensor([0.3, 1.0, 0.0])
    assert torch.equal(group_advantages(singles, 1, scale=scale), torch.zeros(3))
    assert torch.equal(group_advantages(torch.tensor([2.0]), 1, scale=scale), torch.zeros(1))


def test_integer_rewards_are_accepted() -> None:
    close(group_advantages(torch.tensor([1, 0, 1, 1]), 2, scale="none"), [0.5, -0.5, 0.0, 0.0])


def test_zero_std_groups() -> None:
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.2, 0.2])
    assert zero_std_groups(rewards, 2).tolist() == [True, False, True]
    assert zero_std_groups(rewards, 1).tolist() == [True] * 6


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(torch.zeros(2, 2), 2)
    with pytest.raises(ValueError, match="not divisible by group_size=2"):
        group_advantages(torch.zeros(3), 2)
    with pytest.raises(ConfigError, match="group_size must be an int >= 1"):
        zero_std_groups(torch.zeros(3), 0)
    with pytest.raises(ConfigError, match="scale must be one of"):
        group_advantages(torch.zeros(4), 2, scale="std")  # type: ignore[arg-type]
