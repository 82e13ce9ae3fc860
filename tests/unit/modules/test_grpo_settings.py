"""`GRPOSettings`: the off-policy correction's defaults (TRL's bounds), the KL's bias correction reaching the
loss, dynamic sampling's checks, and bad values refused naming the field."""

from __future__ import annotations

import pytest
import torch

from ecr.errors import ConfigError
from ecr.modules.grpo_settings import GRPOSettings
from ecr.rl.loss import grpo_loss


def test_the_off_policy_defaults_are_trls() -> None:
    s = GRPOSettings()
    # TRL: vllm_importance_sampling_correction on, clip_max 3.0, clip_min None (auto's mode: token_truncate)
    assert (s.off_policy_correction, s.off_policy_clip_max, s.off_policy_clip_min) == ("auto", 3.0, None)
    assert s.off_policy_options() == {"setting": "auto", "clip_max": 3.0, "clip_min": None}
    GRPOSettings(off_policy_correction="sequence_mask", off_policy_clip_max=None, off_policy_clip_min=0.5)
    GRPOSettings(off_policy_correction="none", off_policy_clip_max=None)  # no bound needed: nothing is applied


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"off_policy_correction": "token"}, "off_policy_correction: 'token' is not one of auto, none, token_trunc"),
        ({"off_policy_clip_max": -1.0}, "off_policy_clip_max must be a finite ratio >= 0"),
        ({"off_policy_clip_min": float("nan")}, "off_policy_clip_min must be a finite ratio >= 0"),
        ({"off_policy_clip_min": 3.0}, r"off_policy_clip_min \(3.0\) must be less than off_policy_clip_max \(3.0\)"),
        (
            {"off_policy_correction": "token_truncate", "off_policy_clip_max": None},
            "off_policy_correction=token_truncate needs off_policy_clip_min or off_policy_clip_max",
        ),
        (  # auto resolves to token_truncate under a filter
            {"off_policy_clip_max": None},
            "off_policy_correction=auto needs off_policy_clip_min or off_policy_clip_max",
        ),
    ],
)
def test_bad_off_policy_settings_are_refused_naming_the_field(kw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GRPOSettings(**kw)


def test_the_kl_bias_correction_reaches_the_loss() -> None:
    """Off-policy (ratio != 1) with beta > 0, use_bias_correction_kl weights the KL term by the ratio."""
    torch.manual_seed(0)
    logp, old, ref = (torch.randn(2, 3) * 0.3 for _ in range(3))
    adv, mask = torch.tensor([1.0, -1.0]), torch.ones(2, 3)
    plain, corrected = GRPOSettings(), GRPOSettings(use_bias_correction_kl=True)
    assert plain.loss_options()["use_bias_correction_kl"] is False
    a = grpo_loss(logp, old, ref, adv, mask, **plain.loss_options())[0]
    b = grpo_loss(logp, old, ref, adv, mask, **corrected.loss_options())[0]
    assert not torch.allclose(a, b)


def test_dynamic_sampling_checks() -> None:
    assert not GRPOSettings().dynamic_sampling and GRPOSettings().max_resample_rounds == 4
    GRPOSettings(dynamic_sampling=True, max_resample_rounds=0)
    with pytest.raises(ConfigError, match="max_resample_rounds must be >= 0"):
        GRPOSettings(max_resample_rounds=-1)
    with pytest.raises(ConfigError, match="drop filter_zero_std_groups"):
        GRPOSettings(dynamic_sampling=True, filter_zero_std_groups=True)
