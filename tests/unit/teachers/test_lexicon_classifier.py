"""Offline teachers: the NRC lexicon shipped in nrclex, and a local HF classifier checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecr.errors import ConfigError
from ecr.fixtures.tiny_models import build_tiny_classifier
from ecr.labels import GOEMOTIONS_LABELS, LabelSet
from ecr.teachers.base import Teacher, TeacherLabel, map_into_space
from ecr.teachers.classifier import ClassifierTeacher
from ecr.teachers.lexicon import LexiconTeacher, load_nrc


def test_nrc_lexicon_is_the_packaged_file() -> None:
    lex = load_nrc()
    assert len(lex) == 6468 and "anger" in lex["furious"]


@pytest.mark.parametrize(
    ("labels", "text", "expected"),
    [
        ("dfew", "He is cheerful and joyful.", ("happy",)),
        ("dfew", "A cheerful grin.", ("happy", "surprise")),  # NRC tags grin/cheerful with surprise too
        ("dfew", "The man sits at a table.", ("neutral",)),
        ("dfew", "She is not happy at all.", ("neutral",)),  # negation
        ("dfew", "He isn't smiling, he is furious.", ("angry",)),
        ("dfew", "Her mouth opens and closes.", ("neutral",)),  # NRC's mouth->surprise is ignored
        ("mafw", "She seems nervous and disappointed.", ("anxiety", "disappointment")),  # direct label words
        ("goemotions", "He weeps with sorrow.", ("sadness",)),
        ("goemotions", "A joyful man.", ("joy",)),
    ],
)
def test_lexicon_labels(labels: str, text: str, expected: tuple[str, ...]) -> None:
    assert LexiconTeacher(labels).label([text]) == [TeacherLabel(expected)]


def test_lexicon_at_most_two_labels_and_protocol() -> None:
    t = LexiconTeacher("dfew")
    assert isinstance(t, Teacher)
    out = t.label_one("Terrified, furious, disgusted, sad, happy and astonished at once.")
    assert len(out.labels) == 2 and out.probs is None
    assert t.settings()["teacher"] == "lexicon"


def test_lexicon_config_errors() -> None:
    with pytest.raises(ConfigError, match="not in"):
        LexiconTeacher("dfew", emotion_map={"trust": "contempt"})
    assert LexiconTeacher(["happy", "sad"]).label_names == ("happy", "sad", "neutral")  # neutral always added


def test_map_into_space_both_directions() -> None:
    assert map_into_space("joy", LabelSet("d", ("happy", "sad", "neutral"))) == "happy"
    assert map_into_space("happiness", LabelSet("g", GOEMOTIONS_LABELS)) == "joy"
    assert map_into_space("nervousness", LabelSet("m", ("anxiety", "neutral"))) == "anxiety"
    assert map_into_space("admiration", LabelSet("d", ("happy", "neutral"))) is None


@pytest.fixture(scope="module")
def tiny_goemotions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("cls") / "goemo", GOEMOTIONS_LABELS, seed=3)


def test_classifier_teacher_maps_goemotions_into_task_space(tiny_goemotions: Path) -> None:
    t = ClassifierTeacher(tiny_goemotions, "dfew", threshold=0.5)
    texts = ["He smiles.", "A very long sentence about a sad man who cries in the rain.", "Why?"]
    results = t.label(texts)
    raw = t.model.probs(texts)  # [N, 28] teacher probabilities
    goemo = list(GOEMOTIONS_LABELS)
    for i, r in enumerate(results):
        assert 1 <= len(r.labels) <= 2 and set(r.labels) <= set(t.label_names)
        assert r.probs is not None and set(r.probs) == set(t.label_names)
        # each task class receives the probability of its GoEmotions counterpart
        assert r.probs["happy"] == pytest.approx(float(raw[i, goemo.index("joy")]), abs=1e-5)
        assert r.probs["angry"] == pytest.approx(float(raw[i, goemo.index("anger")]), abs=1e-5)
        above = [k for k, p in r.probs.items() if p >= 0.5]
        best = max(r.probs, key=r.probs.get)  # type: ignore[arg-type]
        assert set(r.labels) <= set(above) or r.labels == (best,)


def test_classifier_teacher_label_map_and_errors(tiny_goemotions: Path, tmp_path: Path) -> None:
    t = ClassifierTeacher(tiny_goemotions, ["excited", "neutral"], label_map={"excitement": "excited"})
    assert t.label(["Wow!"])[0].probs is not None
    with pytest.raises(ConfigError, match="none of its classes"):
        ClassifierTeacher(tiny_goemotions, ["zzz"], label_map=dict.fromkeys(GOEMOTIONS_LABELS))
    with pytest.raises(ConfigError, match="not a local HF model folder"):
        ClassifierTeacher(tmp_path, "dfew")
