"""The verifier wrapper: student resolution, batched probs in input order, the saved folder, plain HF folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ecr.errors import ConfigError
from ecr.fixtures.tiny_models import build_tiny_classifier
from ecr.hub import resolve_student
from ecr.labels import GOEMOTIONS_LABELS, resolve_label_space
from ecr.models.verifier import META_FILE, HFVerifier, Verifier, load_verifier

SENTENCES = [
    "He smiles.",
    "A much longer sentence about a woman who frowns and shouts at the people around her in the kitchen.",
    "Tears.",
    "The voice trembles with fear while the eyes look around the dark room.",
    "",
    "She laughs loudly at the joke.",
]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("tiny") / "goemo", GOEMOTIONS_LABELS)


def test_label_spaces() -> None:
    assert resolve_label_space("goemotions") == GOEMOTIONS_LABELS
    assert resolve_label_space("dfew")[-1] == "fear" and "neutral" in resolve_label_space("dfew")
    assert resolve_label_space(["joy", "anger"]) == ("joy", "anger", "neutral")


def test_resolve_student_is_local_only() -> None:
    assert (Path(resolve_student("minilm")) / "config.json").is_file()
    with pytest.raises(ConfigError, match="never downloads"):
        resolve_student("roberta-base-that-is-not-cached/xyz")


def test_plain_hf_folder_loads_with_id2label(tiny_folder: Path) -> None:
    v = load_verifier(tiny_folder, batch_size=2)
    assert isinstance(v, Verifier)
    assert v.label_names == list(GOEMOTIONS_LABELS) and v.threshold == 0.1 and v.mapping is None
    assert not v.training


def test_probs_batched_sorted_equals_one_at_a_time(tiny_folder: Path) -> None:
    v = load_verifier(tiny_folder, batch_size=2)
    batched = v.probs(SENTENCES)
    assert batched.shape == (len(SENTENCES), 28)
    assert ((batched > 0) & (batched < 1)).all()
    single = torch.cat([v.probs([s]) for s in SENTENCES])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(batched[0], batched[1])  # distinct rows: order actually checked
    assert v.probs([]).shape == (0, 28)


def test_probs_restores_train_mode_and_has_no_grad(tiny_folder: Path) -> None:
    v = load_verifier(tiny_folder)
    v.train()
    p = v.probs(["He smiles."])
    assert v.training and not p.requires_grad


def test_save_and_reload_is_identical(tiny_folder: Path, tmp_path: Path) -> None:
    v = load_verifier(tiny_folder)
    v.threshold = 0.25
    v.mapping = {"happiness": "joy", "neutral": "neutral"}
    out = v.save(tmp_path / "erv")
    meta = json.loads((out / META_FILE).read_text())
    assert meta["threshold"] == 0.25 and meta["label_names"] == list(GOEMOTIONS_LABELS)
    again = load_verifier(out)
    assert again.label_names == v.label_names and again.threshold == 0.25 and again.mapping == v.mapping
    torch.testing.assert_close(again.probs(SENTENCES), v.probs(SENTENCES))
    assert load_verifier(out, threshold=0.4).threshold == 0.4


def test_head_size_must_match_labels(tiny_folder: Path) -> None:
    v = load_verifier(tiny_folder)
    with pytest.raises(ConfigError, match="28 outputs"):
        HFVerifier(v.model, v.tokenizer, ["a", "b"])


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no config.json"):
        load_verifier(tmp_path)
