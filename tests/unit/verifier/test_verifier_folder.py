"""`load_verifier` on half-broken folders: every incomplete or corrupt folder is a ConfigError naming the folder
and what is missing or unreadable (never a tokenizer that maps everything to [UNK], never a third-party error
without a file), and the τ in force is logged with its source."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from ecr.errors import ConfigError
from ecr.fixtures.tiny_models import build_tiny_classifier
from ecr.models.verifier import DEFAULT_SOURCE, META_FILE, load_verifier

LABELS = ("happy", "sad", "neutral")
UNK_ONLY = {
    "version": "1.0", "truncation": None, "padding": None, "normalizer": None, "post_processor": None,
    "decoder": None, "pre_tokenizer": {"type": "Whitespace"},
    "added_tokens": [{"id": 0, "content": "[UNK]", "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True}],
    "model": {"type": "WordLevel", "vocab": {"[UNK]": 0}, "unk_token": "[UNK]"},
}  # fmt: skip


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    plain = build_tiny_classifier(tmp_path_factory.mktemp("v") / "plain", LABELS)
    folder = load_verifier(plain, threshold=0.35).save(plain.parent / "verifier")
    assert json.loads((folder / META_FILE).read_text())["threshold"] == 0.35
    return folder


def _no_tokenizer(d: Path) -> None:
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (d / name).unlink(missing_ok=True)


def _garbage_weights(d: Path) -> None:
    (d / "model.safetensors").write_bytes(b"\x93garbage" * 100)


def _truncated_weights(d: Path) -> None:
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])


def _unk_tokenizer(d: Path) -> None:
    _no_tokenizer(d)
    (d / "tokenizer.json").write_text(json.dumps(UNK_ONLY))


BROKEN = {
    "no tokenizer files": (_no_tokenizer, "no tokenizer files"),
    "no weights": (lambda d: (d / "model.safetensors").unlink(), "no weights"),
    "no config.json": (lambda d: (d / "config.json").unlink(), "no config.json"),
    "garbage weights": (_garbage_weights, "cannot load its weights (model.safetensors)"),
    "truncated weights": (_truncated_weights, "cannot load its weights (model.safetensors)"),
    "unk-only tokenizer": (_unk_tokenizer, "unknown tokens only"),
    "erv.json not JSON": (lambda d: (d / META_FILE).write_text("{oops"), "not valid JSON"),
    "erv.json not UTF-8": (lambda d: (d / META_FILE).write_bytes(b"\xff\xfe{"), "not valid JSON"),
    "erv.json threshold 0": (lambda d: _meta(d, threshold=0), "threshold must be a number strictly between"),
    "erv.json threshold inf": (lambda d: _meta(d, threshold=float("inf")), "threshold must be a number"),
    "erv.json threshold a string": (lambda d: _meta(d, threshold="0.3"), "threshold must be a number"),
    "erv.json max_labels -1": (lambda d: _meta(d, max_labels=-1), "max_labels must be an integer >= 1"),
    "erv.json max_labels 1.5": (lambda d: _meta(d, max_labels=1.5), "max_labels must be an integer >= 1"),
    "erv.json max_length 0": (lambda d: _meta(d, max_length=0), "max_length must be an integer >= 1"),
    "erv.json empty label_names": (lambda d: _meta(d, label_names=[]), "label_names must be a non-empty list"),
    "erv.json duplicate label_names": (lambda d: _meta(d, label_names=["happy", "happy", "sad"]), "duplicates"),
    "erv.json 4 labels, head of 3": (
        lambda d: _meta(d, label_names=[*LABELS, "fear"]),
        "label_names has 4 names but the head in",
    ),
    "erv.json mapping to an unknown label": (
        lambda d: _meta(d, mapping={"happy": "joy"}),
        "mapping names verifier labels ['joy']",
    ),
    "unexpected weights": (lambda d: _add_weight(d, "extra.weight"), "unexpected weights ['extra.weight']"),
}


def _meta(d: Path, **fields: object) -> None:
    (d / META_FILE).write_text(json.dumps({**json.loads((d / META_FILE).read_text()), **fields}))


def _add_weight(d: Path, name: str) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(d / "model.safetensors")
    save_file({**state, name: torch.zeros(2)}, d / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_folder_is_a_clear_error(good: Path, tmp_path: Path, name: str) -> None:
    breaker, message = BROKEN[name]
    folder = shutil.copytree(good, tmp_path / "v")
    breaker(folder)
    with pytest.raises(ConfigError, match="v") as info:
        load_verifier(folder)
    assert message in str(info.value) and str(folder) in str(info.value) + str(folder / META_FILE)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_verifier(tmp_path / "nope")


def test_tau_in_force_is_logged_with_its_source(good: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ecr.models.verifier"):
        v = load_verifier(good)
    assert (v.threshold, v.threshold_source) == (0.35, str(good / META_FILE))
    assert "τ = 0.35" in caplog.text
    plain = shutil.copytree(good, tmp_path / "plain")
    (plain / META_FILE).unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ecr.models.verifier"):
        v = load_verifier(plain)
    assert (v.threshold, v.threshold_source) == (0.1, DEFAULT_SOURCE)
    assert any(r.levelno == logging.WARNING and "τ = 0.1" in r.getMessage() for r in caplog.records)
    assert load_verifier(good, threshold=0.2).threshold_source == "override"
    with pytest.raises(ConfigError, match="threshold override must be a number strictly between 0 and 1"):
        load_verifier(good, threshold=1.0)
