"""`ecr explain` filters (format, answer, teacher agreement) and the `{label}` instruction that conditions them."""

from __future__ import annotations

import pytest

from ecr.labels import get_label_set
from ecr.models.causal_lm import TextCollator
from ecr.models.qwen2_5_omni import OmniCollator
from ecr.prompts import DEFAULT_INSTRUCTION, instruction_for
from ecr.teachers.explain import agreed_label, rejection

LABELS = get_label_set(["calm", "excited", "bored", "tense"])


def test_agreed_label_is_the_top_non_neutral_vote() -> None:
    assert agreed_label([["calm"], ["neutral"], ["calm", "tense"], ["tense"]]) == ["calm", "tense"]
    assert agreed_label([["neutral"], []]) == []


@pytest.mark.parametrize(
    ("completion", "teacher", "expected"),
    [
        (None, None, "no_prediction"),
        ("I think calm", None, "format"),
        ("<think></think><answer>calm</answer>", None, "format"),
        ("<think>She rests.</think>\n<answer>tense</answer>", None, "answer"),
        ("<think>She rests.</think>\n<answer>calm</answer>", [["bored"]], "teacher"),
        ("<think>She rests.</think>\n<answer>calm</answer>", [["neutral"]], "teacher"),
        ("<think>She rests.</think>\n<answer>calm</answer><|im_end|>", [["calm"], ["neutral"]], None),
        ("<think>She rests.</think>\n<answer>Calm</answer>", None, None),
    ],
)
def test_rejection_reasons(completion: str | None, teacher: list | None, expected: str | None) -> None:
    assert rejection(completion, "calm", LABELS, teacher) == expected


def test_label_placeholder_conditions_every_sample_of_both_collators() -> None:
    template = "The person in this clip feels {label}. Explain why in <think> </think>, then <answer> </answer>."
    assert instruction_for(DEFAULT_INSTRUCTION, None) == DEFAULT_INSTRUCTION  # no placeholder: unchanged
    with pytest.raises(ValueError, match="no label"):
        instruction_for(template, None)
    omni = OmniCollator(processor=None, mode="generate", instruction=template)
    (user,) = omni._messages({"label": "bored"}, None)
    assert user["content"][-1]["text"].startswith("The person in this clip feels bored.")
    text = TextCollator(processor=None, mode="generate", instruction=template)
    assert "feels tense." in text._messages({"label": "tense", "text": "hi"}, None)[0]["content"]
