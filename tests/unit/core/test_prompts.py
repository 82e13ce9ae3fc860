from __future__ import annotations

from ecr.prompts import (
    DEFAULT_INSTRUCTION,
    build_messages,
    format_target,
    is_well_formed,
    parse_completion,
)


def test_instruction_is_verbatim() -> None:
    assert "most obvious to you?  Output the thinking" in DEFAULT_INSTRUCTION  # two spaces, as released
    assert DEFAULT_INSTRUCTION.endswith("<answer> </answer> tags.")


def test_parse_basic_and_whitespace() -> None:
    p = parse_completion("<think>\n He smiles.\n</think>\n\n<answer>  Happy </answer>")
    assert p.think == "He smiles." and p.answer == "Happy"
    p = parse_completion("< Think >x</think ><ANSWER>sad</answer>")
    assert p.think == "x" and p.answer == "sad"


def test_parse_missing_and_several_tags() -> None:
    assert parse_completion("no tags at all").think is None
    assert parse_completion("<think>unclosed <answer>sad</answer>").think is None
    assert parse_completion("<think>a</think> happy").answer is None
    # the first answer wins
    assert parse_completion("<think>a</think><answer>sad</answer><answer>happy</answer>").answer == "sad"
    assert parse_completion("<think></think><answer></answer>").think == ""


def test_format_strict_vs_tolerant() -> None:
    good = "<think>a</think>\n<answer>sad</answer>"
    assert is_well_formed(good, strict=True)
    assert not is_well_formed(good + "\n", strict=True)
    assert is_well_formed(good + "\n")
    assert is_well_formed(good + "<|im_end|>\n", eos_tokens=("<|im_end|>",))
    assert not is_well_formed(good + " trailing words")
    assert not is_well_formed("<answer>sad</answer>")


def test_target_round_trips_through_parser() -> None:
    target = format_target(" He frowns. ", "angry")
    assert target == "<think>He frowns.</think>\n<answer>angry</answer>"
    assert is_well_formed(target, strict=True)
    assert parse_completion(target).answer == "angry"


def test_messages_order() -> None:
    msgs = build_messages(target="t")
    assert [c["type"] for c in msgs[0]["content"]] == ["video", "audio", "text"]
    assert msgs[-1]["role"] == "assistant"
    assert build_messages(audio=False)[0]["content"][1]["type"] == "text"
