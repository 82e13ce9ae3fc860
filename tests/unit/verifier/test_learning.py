"""Real learning: the MiniLM student, fine-tuned a few dozen steps on lexicon-labelled sentences, beats its
untrained head on held-out sentences (macro F1 under the reward's decision rule, τ picked on validation)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from ecr.data.sentences import SentenceDataModule
from ecr.modules.erv import ERVModule
from ecr.teachers.label import label_sentences, write_rows
from ecr.teachers.lexicon import LexiconTeacher

SUBJECTS = ["The man", "The woman", "The child", "The speaker", "The old man", "The girl", "He", "She"]
PLACES = ["in the kitchen", "at the station", "during the meeting", "near the window", "on the phone", "at home"]
PHRASES = {
    "happy": ["smiles and laughs", "looks cheerful", "is delighted", "grins joyfully"],
    "sad": ["weeps quietly", "looks gloomy", "is sorrowful", "cries"],
    "angry": ["is furious", "shouts in rage", "looks hostile", "glares with anger"],
    "fear": ["is terrified", "looks frightened", "trembles in panic", "is afraid"],
    "surprise": ["is astonished", "looks amazed", "gasps in surprise", "seems startled"],
    "disgust": ["is disgusted", "looks repulsed", "grimaces in disgust", "recoils in revulsion"],
    "neutral": ["sits at a table", "walks across the room", "reads a newspaper", "stands by a door"],
}


def make_sentences(seed: int) -> list[str]:
    combos = [
        f"{s} {p} {w}." for s, p, w in itertools.product(SUBJECTS, [x for v in PHRASES.values() for x in v], PLACES)
    ]
    random.Random(seed).shuffle(combos)
    return combos[:240]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine this is faster than two contending ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_minilm_student_learns_lexicon_labels(tmp_path: Path, one_thread: None) -> None:
    teacher = LexiconTeacher("dfew")
    rows = label_sentences(make_sentences(0), teacher, split_sentences=False)
    assert {lbl for r in rows for lbl in r["labels"]} == set(teacher.label_names)  # every class present
    write_rows(tmp_path / "sentences.jsonl", rows)

    dm = SentenceDataModule(str(tmp_path / "sentences.jsonl"), "dfew", val_fraction=0.25, seed=0, batch_size=16)
    module = ERVModule(
        student="minilm",
        task="dfew",
        optimization={"lr": 3e-4, "warmup_ratio": 0.1},
        max_length=32,
        freeze_embeddings=True,
    )
    pl.seed_everything(0)
    trainer = pl.Trainer(
        max_steps=20, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, val_check_interval=20, check_val_every_n_epoch=None,
        accelerator="cpu",
    )  # fmt: skip
    before = trainer.validate(module, datamodule=dm, verbose=False)[0]["val/macro_f1"]
    trainer.fit(module, datamodule=dm)
    after = trainer.callback_metrics["val/macro_f1"].item()
    print(f"held-out macro F1: untrained {before:.3f} -> trained {after:.3f}")
    assert after > before + 0.25
    assert after > 0.6
    # the trained verifier labels an unseen sentence with its emotion
    sets = module.verifier.label_sets(["The grandmother weeps quietly in the garden."])
    assert "sad" in sets[0]
    assert isinstance(module.threshold, torch.Tensor) and 0 < float(module.threshold) < 1
