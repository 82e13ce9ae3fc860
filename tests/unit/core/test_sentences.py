"""Sentence splitters: the paper's regex (exact behaviour) and pysbd."""

from __future__ import annotations

import pytest

from ecr.errors import ConfigError
from ecr.sentences import get_splitter, split_official, split_pysbd


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "He frowns. His voice trembles! Is he afraid? Yes.",
            ["He frowns.", "His voice trembles!", "Is he afraid?", "Yes."],
        ),
        ("Mr. Smith", ["Mr.", "Smith"]),
        ('reads: "I am fine. Really." She smiles.', ['reads: "I am fine. Really." She smiles.']),
        ("no terminal punctuation", ["no terminal punctuation"]),
        ("", []),
        ("  \n ", []),
        ("One.\n\nTwo.", ["One.", "Two."]),
    ],
)
def test_official(text: str, expected: list[str]) -> None:
    assert split_official(text) == expected


def test_pysbd_abbreviations_and_quotes() -> None:
    text = 'Dr. Smith arrived at 5 p.m. on Jan. 3rd. He was furious! Why? "I can\'t believe it," she said.'
    assert split_pysbd(text) == [
        "Dr. Smith arrived at 5 p.m. on Jan. 3rd.",
        "He was furious!",
        "Why?",
        '"I can\'t believe it," she said.',
    ]
    assert split_pysbd("Mr. Smith frowns.") == ["Mr. Smith frowns."]
    assert split_pysbd("   ") == []


def test_get_splitter() -> None:
    assert get_splitter("official") is split_official
    fn = str.split
    assert get_splitter(fn) is fn
    with pytest.raises(ConfigError, match="unknown sentence splitter"):
        get_splitter("nltk")
