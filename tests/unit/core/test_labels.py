from __future__ import annotations

import pytest

from ecr.errors import LabelError
from ecr.labels import (
    DFEW,
    DFEW_LABELS,
    GOEMOTIONS_LABELS,
    GOEMOTIONS_MAPPING,
    MAFW,
    MAFW_LABELS,
    LabelSet,
    get_label_set,
    label_distribution,
    resolve_verifier_mapping,
    verifier_label_space,
)


def test_label_orders_match_dataset_ids() -> None:
    assert DFEW_LABELS == ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
    assert MAFW_LABELS[3] == "happiness" and MAFW_LABELS[10] == "disappointment" and len(MAFW_LABELS) == 11
    assert len(GOEMOTIONS_LABELS) == 28 and GOEMOTIONS_LABELS[27] == "neutral"
    # indices of the released verifier (docs/method.md §3)
    expected = {
        "joy": 17,
        "anger": 2,
        "disgust": 11,
        "fear": 14,
        "sadness": 25,
        "surprise": 26,
        "neutral": 27,
        "nervousness": 19,
        "grief": 16,
        "disappointment": 9,
        "disapproval": 10,
    }
    assert {k: GOEMOTIONS_LABELS.index(k) for k in expected} == expected


@pytest.mark.parametrize(
    ("text", "dfew", "mafw"),
    [
        ("Happiness", "happy", "happiness"),
        ("  happy ", "happy", "happiness"),
        ("sadness.", "sad", "sadness"),
        ("ANGRY", "angry", "anger"),
        ("surprised", "surprise", "surprise"),
        ("fearful", "fear", "fear"),
        ("disgusted", "disgust", "disgust"),
        ("anxious", None, "anxiety"),
        ("helpless", None, "helplessness"),
        ("disappointed", None, "disappointment"),
        ("contemptuous", None, "contempt"),
        ("**Neutral**", "neutral", "neutral"),
        ("unhappy person", None, None),  # whole-answer matching only, never substrings
        ("", None, None),
    ],
)
def test_normalize_synonyms(text: str, dfew: str | None, mafw: str | None) -> None:
    assert DFEW.normalize(text) == dfew
    assert MAFW.normalize(text) == mafw


def test_index_and_errors_name_the_field() -> None:
    assert DFEW.index("Happiness") == 0
    assert MAFW.index("angry") == 0
    with pytest.raises(LabelError, match=r"row 3: 'bored' is not a label of 'dfew'"):
        DFEW.index("bored", where="row 3")


def test_custom_label_sets_from_config() -> None:
    ls = get_label_set(["Calm", "Excited"], synonyms={"thrilled": "excited"})
    assert ls.labels == ("calm", "excited")
    assert ls.normalize("Thrilled") == "excited"
    with pytest.raises(LabelError, match="duplicate"):
        LabelSet("x", ("a", "A"))
    with pytest.raises(LabelError, match="not one of"):
        LabelSet("x", ("a",), {"b": "c"})
    with pytest.raises(LabelError, match="unknown label set"):
        get_label_set("ravdess")


def test_verifier_mapping_goemotions_and_identity() -> None:
    mafw_map = resolve_verifier_mapping(MAFW, GOEMOTIONS_LABELS, GOEMOTIONS_MAPPING)
    assert mafw_map["happiness"] == 17 and mafw_map["contempt"] == 10 and mafw_map["anxiety"] == 19
    dfew_map = resolve_verifier_mapping(DFEW, GOEMOTIONS_LABELS, GOEMOTIONS_MAPPING)
    assert dfew_map == {"happy": 17, "sad": 25, "neutral": 27, "angry": 2, "surprise": 26, "disgust": 11, "fear": 14}
    space = verifier_label_space(DFEW)
    assert space == DFEW_LABELS  # neutral already present
    assert resolve_verifier_mapping(DFEW, space) == {lbl: i for i, lbl in enumerate(DFEW_LABELS)}
    custom = get_label_set(["calm", "excited"])
    assert verifier_label_space(custom) == ("calm", "excited", "neutral")
    with pytest.raises(LabelError, match="'excited'.*does not map"):
        resolve_verifier_mapping(custom, GOEMOTIONS_LABELS, GOEMOTIONS_MAPPING)
    # a label absent from the mapping but named like a verifier class maps to it
    assert resolve_verifier_mapping(get_label_set(["joy", "love"]), GOEMOTIONS_LABELS, GOEMOTIONS_MAPPING) == {
        "joy": 17,
        "love": 18,
    }


def test_label_distribution_sorted() -> None:
    assert list(label_distribution(["a", "b", "b", "c", "c", "c"]).items()) == [("c", 3), ("b", 2), ("a", 1)]
