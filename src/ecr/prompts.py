"""The one chat template of `ecr`, the output format, and parsing of `<think>` / `<answer>`.

SFT, GRPO and evaluation all build their prompts with `build_messages` (the research code used a different
template per stage, which is a bug: docs/method.md §2). The instruction is the paper's evaluation prompt verbatim
(two spaces before "Output") so released checkpoints behave as published.

Parsing rules (documented because rewards and metrics depend on them):
- think: the text inside the FIRST `<think>…</think>` pair (newlines allowed), stripped; None if there is no
  closed pair.
- answer: the text inside the FIRST `<answer>…</answer>` pair, stripped — the first answer wins when a model
  writes several (this is what the official reward's `re.search` does); None if there is no closed pair
  (the official reward then scored the whole completion; `ecr` scores it as wrong, docs/method.md §3).
- Tag names are matched case-insensitively and tolerate inner whitespace (`< answer >`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

DEFAULT_INSTRUCTION = (
    "As an emotional recognition expert; throughout the video, which emotion conveyed by the characters is "
    "the most obvious to you?  Output the thinking process in <think> </think> and final emotion in "
    "<answer> </answer> tags."
)

_THINK = re.compile(r"<\s*think\s*>(.*?)<\s*/\s*think\s*>", re.IGNORECASE | re.DOTALL)
_ANSWER = re.compile(r"<\s*answer\s*>(.*?)<\s*/\s*answer\s*>", re.IGNORECASE | re.DOTALL)
# Official format check: the whole completion is think-block, optional whitespace, answer-block.
_FORMAT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)


@dataclass(frozen=True)
class ParsedCompletion:
    """The parts of a model output that rewards and metrics read."""

    think: str | None
    answer: str | None


def parse_completion(text: str) -> ParsedCompletion:
    """Extract the first think block and the first answer block (see module docstring for the rules)."""
    think = _THINK.search(text)
    answer = _ANSWER.search(text)
    return ParsedCompletion(
        think=think.group(1).strip() if think else None,
        answer=answer.group(1).strip() if answer else None,
    )


def extract_think(text: str) -> str | None:
    return parse_completion(text).think


def extract_answer(text: str) -> str | None:
    return parse_completion(text).answer


def is_well_formed(text: str, *, strict: bool = False, eos_tokens: tuple[str, ...] = ()) -> bool:
    """True if the completion is `<think>…</think>` + whitespace + `<answer>…</answer>` and nothing else.

    strict=True is the official full match (a trailing newline fails). strict=False (default) first strips
    surrounding whitespace and any trailing `eos_tokens` strings (e.g. "<|im_end|>") left by decoding.
    """
    if not strict:
        text = text.strip()
        changed = True
        while changed and eos_tokens:
            changed = False
            for eos in eos_tokens:
                if eos and text.endswith(eos):
                    text = text[: -len(eos)].rstrip()
                    changed = True
    return _FORMAT.fullmatch(text) is not None


def format_target(explanation: str, label: str) -> str:
    """The assistant turn the SFT stage learns: `<think>explanation</think>\\n<answer>label</answer>`."""
    return f"<think>{explanation.strip()}</think>\n<answer>{label}</answer>"


def instruction_for(instruction: str, label: str | None) -> str:
    """The instruction of one sample: a `{label}` placeholder becomes the sample's label (label-conditioned
    explanations for bootstrapping, `ecr explain`); an instruction without it is returned unchanged."""
    if "{label}" not in instruction:
        return instruction
    if not label:
        raise ValueError("the instruction holds {label} but the sample has no label")
    return instruction.replace("{label}", label)


def build_messages(
    *,
    instruction: str = DEFAULT_INSTRUCTION,
    video: bool = True,
    audio: bool = True,
    target: str | None = None,
    system: str | None = None,
) -> list[dict[str, Any]]:
    """Chat messages in the Hugging Face multimodal format (video first, then audio, then the instruction).

    The media entries carry no data: the processor receives frames/audio separately and expands the
    placeholders. `target` adds the assistant turn (SFT); without it the prompt ends at the user turn and the
    caller asks the template for the generation prompt.
    """
    content: list[dict[str, Any]] = []
    if video:
        content.append({"type": "video"})
    if audio:
        content.append({"type": "audio"})
    content.append({"type": "text", "text": instruction})
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    messages.append({"role": "user", "content": content})
    if target is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": target}]})
    return messages


def build_text_messages(
    text: str, *, instruction: str = DEFAULT_INSTRUCTION, target: str | None = None
) -> list[dict[str, Any]]:
    """Messages for text-only backbones: the clip's text (e.g. a subtitle) followed by the same instruction."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"{text}\n{instruction}"}]
    if target is not None:
        messages.append({"role": "assistant", "content": target})
    return messages
