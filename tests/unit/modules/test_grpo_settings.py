"""`GRPOSettings`' off-policy correction fields: TRL's defaults, and bad values refused naming the field."""

from __future__ import annotations

import pytest

from ecr.errors import ConfigError
from ecr.modules.grpo_settings import GRPOSettings


def test_the_off_policy_defaults_are_trls() -> None:
    s = GRPOSettings()
    # TRL: vllm_importance_sampling_correction on, mode sequence_mask, clip_max 3.0, clip_min None
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
    ],
)
def test_bad_off_policy_settings_are_refused_naming_the_field(kw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        GRPOSettings(**kw)
