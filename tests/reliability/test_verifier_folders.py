"""Poisoned verifier folders through the command line (`ecr score --verifier DIR`, the same loader and reward
GRPO uses): NaN head weights, a folder without head weights and an `erv.json` with τ = NaN are refused at load
with one line naming the folder or the field (exit 2, no traceback); a verifier that loads but returns NaN for
some sentence stops the run with `VerifierOutputError` instead of scoring it. (Every other erv.json field and a
good folder: tests/unit/verifier/test_verifier_folder.py, in process.)"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from faults import record_outcome, run_ecr
from safetensors.torch import load_file, save_file

from ecr.fixtures.tiny_models import build_tiny_classifier
from ecr.labels import DFEW
from ecr.models.verifier import META_FILE, load_verifier

TABLE = "poisoned verifier folders (ecr score --verifier)"
WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    plain = build_tiny_classifier(tmp_path_factory.mktemp("v") / "plain", DFEW.labels)
    return load_verifier(plain, threshold=0.3).save(plain.parent / "verifier")


def _edit_weights(folder: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    state = load_file(folder / WEIGHTS)
    edit(state)
    save_file(state, folder / WEIGHTS, metadata={"format": "pt"})


def _edit_meta(folder: Path, **fields: object) -> None:
    meta = json.loads((folder / META_FILE).read_text())
    (folder / META_FILE).write_text(json.dumps({**meta, **fields}))  # NaN is written as the JSON token NaN


def _nan_head(d: Path) -> None:
    _edit_weights(d, lambda s: s["classifier.weight"].fill_(float("nan")))


def _no_head(d: Path) -> None:
    _edit_weights(d, lambda s: [s.pop(k) for k in ("classifier.weight", "classifier.bias")])


def _nan_word(d: Path) -> None:
    """NaN embedding of the word "furious" only: the load-time probe sentence is finite, a sentence with it is not."""
    _edit_weights(d, lambda s: s["bert.embeddings.word_embeddings.weight"][9943].fill_(float("nan")))


# case -> (how the folder is broken, text the one-line error must contain)
CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "1. NaN head weights": (_nan_head, "non-finite probabilities for the probe sentence"),
    "1. NaN for one word, mid-run": (_nan_word, "VerifierOutputError: the verifier returned non-finite"),
    "2. no head weights": (_no_head, "missing weights ['classifier.bias', 'classifier.weight']"),
    "3. erv.json threshold NaN": (lambda d: _edit_meta(d, threshold=float("nan")), f"{META_FILE}: threshold"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_poisoned_verifier_folder_never_scores(good: Path, tmp_path: Path, case: str) -> None:
    breaker, text = CASES[case]
    folder = Path(shutil.copytree(good, tmp_path / "verifier"))
    breaker(folder)
    think = "She is furious and tense. Her voice is sharp."
    rows = [{"id": "c0", "label": "angry", "completion": f"<think>{think}</think>\n<answer>angry</answer>"}]
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run_ecr(
        ["score", str(predictions), "--labels", "dfew", "--verifier", str(folder), "--bootstrap", "0"], cwd=tmp_path
    )
    traceback = "Traceback" in proc.stderr
    outcome = "silently used (rc 0)" if proc.returncode == 0 else "traceback" if traceback else "clear error (rc 2)"
    record_outcome(TABLE, case, "ecr score", outcome)
    assert proc.returncode == 2 and not traceback, proc.stderr[-3000:]
    assert text in proc.stderr, proc.stderr[-3000:]
    assert str(folder) in proc.stderr or "mid-run" in case, proc.stderr[-3000:]
    assert not (tmp_path / "pred.jsonl.metrics.json").exists()  # nothing was scored from it
