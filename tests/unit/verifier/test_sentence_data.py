"""The labelled-sentence DataModule: validation of rows, leak-free splits, soft targets, class counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ecr.data.sentences import SentenceDataModule, read_sentence_rows, split_rows
from ecr.errors import LabelError, ManifestError
from ecr.labels import LabelSet
from ecr.modules.erv import pos_weights, threshold_scores

SPACE = LabelSet("v", ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"))


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rows_are_validated_with_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path / "s.jsonl", [{"text": "ok", "labels": ["happiness"]}, {"text": "x", "labels": ["jealous"]}])
    with pytest.raises(LabelError, match=r"s.jsonl:2 field 'labels'"):
        read_sentence_rows(p, SPACE)
    p.write_text('{"text": "ok", "labels": []}\n')
    with pytest.raises(ManifestError, match=r"s.jsonl:1: field 'labels'"):
        read_sentence_rows(p, SPACE)
    p.write_text("{broken\n")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_sentence_rows(p, SPACE)
    with pytest.raises(ManifestError, match="ecr label"):
        read_sentence_rows(tmp_path / "none.jsonl", SPACE)
    assert read_sentence_rows(write(p, [{"text": "a", "labels": ["happiness"]}]), SPACE)[0]["labels"] == ["happy"]


def test_split_keeps_groups_together_and_drops_augmented_from_val() -> None:
    rows = [{"text": f"s{i}", "labels": ["happy"], "group": f"g{i % 20}", "augmented": i >= 20} for i in range(100)]
    train, val = split_rows(rows, val_fraction=0.3, seed=0)
    val_groups = {r["group"] for r in val}
    assert val and all(not r["augmented"] for r in val)
    assert not val_groups & {r["group"] for r in train}  # no group on both sides
    assert split_rows(rows, val_fraction=0.3, seed=0) == (train, val)  # deterministic
    fixed = [{"text": "a", "labels": ["sad"], "split": "val"}, {"text": "b", "labels": ["sad"], "split": "train"}]
    assert split_rows(fixed, val_fraction=0.5, seed=0) == ([fixed[1]], [fixed[0]])


def test_datamodule_batches_soft_targets_and_counts(tmp_path: Path) -> None:
    rows = [{"text": f"happy {i}", "labels": ["happy"], "split": "train"} for i in range(6)]
    rows += [{"text": "soft", "labels": ["sad"], "probs": {"sad": 0.8, "fear": 0.3}, "split": "train"}]
    rows += [{"text": "v", "labels": ["angry", "fear"], "split": "val"}]
    dm = SentenceDataModule(str(write(tmp_path / "s.jsonl", rows)), "dfew", batch_size=4, sampler="balanced")
    dm.setup("fit")
    assert dm.label_counts().tolist() == [6, 1, 0, 0, 0, 0, 0]
    batch = next(iter(dm.val_dataloader()))
    assert batch["text"] == ["v"] and batch["hard"].tolist() == [[0, 0, 0, 1, 0, 0, 1]]
    seen = [b for b in dm.train_dataloader()]
    soft = [(b["target"][i], b["hard"][i]) for b in seen for i, t in enumerate(b["text"]) if t == "soft"]
    assert soft, "the balanced sampler should draw the rare row"
    target, hard = soft[0]
    assert target.tolist() == pytest.approx([0, 0.8, 0, 0, 0, 0, 0.3]) and hard.tolist() == [0, 1, 0, 0, 0, 0, 0]


def test_pos_weights_and_threshold_grid() -> None:
    w = pos_weights(torch.tensor([10, 1, 0]), total=20, max_weight=5.0)
    assert w.tolist() == [1.0, 5.0, 1.0]
    probs = torch.tensor([[0.9, 0.2], [0.3, 0.05], [0.15, 0.6]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    scores = threshold_scores(probs, targets, [0.1, 0.25], max_labels=2)
    assert scores[1] > scores[0]  # τ=0.1 adds false positives (0.2, 0.15)


def test_erv_module_mapping_is_checked_before_weights_load() -> None:
    from ecr.errors import ConfigError as _ConfigError
    from ecr.labels import GOEMOTIONS_MAPPING
    from ecr.modules.erv import ERVModule

    with pytest.raises(LabelError, match="contempt"):
        ERVModule(label_space="dfew", task="mafw").configure_model()
    m = ERVModule(label_space="goemotions", task="mafw")
    assert m._mapping() == GOEMOTIONS_MAPPING  # the paper's table, resolved for MAFW
    assert ERVModule(label_space="dfew")._mapping() is None
    with pytest.raises(_ConfigError, match="threshold_grid"):
        ERVModule(threshold_grid=[0.0, 0.5])
    with pytest.raises(_ConfigError, match="label space is unknown"):
        ERVModule().configure_model()


def test_shuffled_order_is_a_function_of_seed_and_epoch(tmp_path: Path) -> None:
    rows = [{"text": f"s{i}", "labels": ["happy"], "split": "train"} for i in range(12)]
    rows += [{"text": "v", "labels": ["sad"], "split": "val"}]
    path = str(write(tmp_path / "s.jsonl", rows))

    def order(epoch: int, seed: int = 0) -> list[str]:
        torch.manual_seed(epoch + 123)  # the global RNG must not matter
        dm = SentenceDataModule(path, "dfew", batch_size=4, seed=seed)
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)  # what Lightning does at each epoch start
        return [t for b in loader for t in b["text"]]

    assert order(0) == order(0) and sorted(order(0)) == sorted(order(1))
    assert order(0) != order(1) and order(0) != order(0, seed=1)


@pytest.mark.parametrize("sampler", ["shuffle", "balanced"])
def test_train_loader_resumes_mid_epoch_exactly(tmp_path: Path, sampler: str) -> None:
    """The ERV loader is stateful (like the clip loaders): a pass resumed from its `state_dict` continues
    with the uninterrupted pass's batches, and the order of an epoch is a function of (seed, epoch)."""
    rows = [{"text": f"s{i}", "labels": ["happy" if i % 3 else "sad"], "split": "train"} for i in range(11)]
    rows += [{"text": "v", "labels": ["sad"], "split": "val"}]
    path = str(write(tmp_path / "s.jsonl", rows))

    def loader():
        dm = SentenceDataModule(path, "dfew", batch_size=3, sampler=sampler, seed=4)
        dm.setup("fit")
        dl = dm.train_dataloader()
        dl.sampler.set_epoch(2)  # what Lightning does at the start of an epoch
        return dl

    full = [b["text"] for b in loader()]
    assert full != [b["text"] for b in (lambda d: (d.sampler.set_epoch(3), d)[1])(loader())]
    interrupted = loader()
    it = iter(interrupted)
    seen = [next(it)["text"], next(it)["text"]]
    resumed = loader()
    resumed.load_state_dict(interrupted.state_dict())
    assert seen + [b["text"] for b in resumed] == full


def test_erv_student_trains_with_dropout_on(tmp_path: Path) -> None:
    """Issue 18.8: `from_pretrained` returns the student in eval mode; every module must train during fit."""
    import lightning as L

    from ecr.modules.erv import ERVModule

    rows = [{"text": f"sentence {i}", "labels": [["calm", "tense"][i % 2]]} for i in range(8)]
    dm = SentenceDataModule(str(write(tmp_path / "s.jsonl", rows)), ["calm", "tense"], batch_size=4, val_fraction=0.25)
    seen: dict[str, list[str]] = {}

    class Modes(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
            seen["eval"] = [n for n, m in pl_module.named_modules() if not m.training]
            seen["dropout"] = [n for n, m in pl_module.named_modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]

    module = ERVModule(student="minilm", max_length=16, freeze_embeddings=True)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=1, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, callbacks=[Modes()],
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    assert seen["dropout"], "the student has no dropout: this test would prove nothing"
    assert seen["eval"] == []
