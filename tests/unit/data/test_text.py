"""TextDataModule and the text manifests: row validation (file:line errors), EMER subtitles as text, seeded
splits and training order, weights-only hparams, the synthetic text manifest, and TextCollator batches whose
labels cover exactly the assistant turn."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import torch

from ecr.data import TextDataModule, read_text_manifest
from ecr.data.text import read_emer_text
from ecr.errors import ConfigError, ManifestError
from ecr.fixtures import synthesize, write_text_manifest
from ecr.fixtures.synth import PROFILES
from ecr.models.causal_lm import TextCollator
from ecr.models.collate import IGNORE_INDEX
from ecr.prompts import format_target

ROWS = [
    {"text": "I can't stop smiling today!", "label": "Happiness", "explanation": "The speaker is smiling."},
    {"text": "Leave me alone.", "label": "anger", "explanation": "The words are curt and hostile."},
    {"text": "Nothing happened, really.", "label": "neutral", "explanation": "A flat statement.", "split": "val"},
    {"text": "Oh no, not again...", "label": "sad", "explanation": "A resigned sigh.", "split": "test"},
]


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _many(path: Path, n: int = 20) -> Path:
    labels = ["happy", "sad", "angry", "neutral"]
    return _jsonl(path, [{"id": f"r{i}", "text": f"utterance {i}", "label": labels[i % 4]} for i in range(n)])


def test_reads_rows_normalises_labels_and_ids(tmp_path):
    recs = read_text_manifest(_jsonl(tmp_path / "t.jsonl", ROWS), "dfew")
    assert [(r.id, r.label, r.split) for r in recs] == [
        ("row1", "happy", None),
        ("row2", "angry", None),
        ("row3", "neutral", "val"),
        ("row4", "sad", "test"),
    ]
    assert recs[0].text == ROWS[0]["text"] and recs[0].explanation == ROWS[0]["explanation"]
    assert recs[1].source == f"{tmp_path / 't.jsonl'}:2"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "a row must be a JSON object"),
        ({"label": "happy"}, "field 'text' must be a non-empty string"),
        ({"text": "   ", "label": "happy"}, "field 'text' must be a non-empty string"),
        ({"text": 3, "label": "happy"}, "field 'text' must be a non-empty string"),
        ({"text": "hi"}, "missing the label"),
        ({"text": "hi", "label": "bored"}, "unknown label 'bored'"),
        ({"text": "hi", "label": "happy", "split": "holdout"}, "unknown split 'holdout'"),
        ({"id": "row1", "text": "hi", "label": "happy"}, r"duplicate id 'row1' \(first at .*t\.jsonl:1\)"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    path = _jsonl(tmp_path / "t.jsonl", [ROWS[0], row])
    with pytest.raises(ManifestError, match=re.escape(f"{path}:2: ") + message):
        read_text_manifest(path, "dfew")


def test_errors_list_collects_every_bad_row(tmp_path):
    path = _jsonl(tmp_path / "t.jsonl", [ROWS[0], {"text": "x"}, ROWS[1], {"text": "y", "label": "bored"}])
    errors: list[ManifestError] = []
    assert [r.label for r in read_text_manifest(path, "dfew", errors=errors)] == ["happy", "angry"]
    assert [str(e).split(": ")[0] for e in errors] == [f"{path}:2", f"{path}:4"]


def test_missing_file_and_bad_config(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        read_text_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(ManifestError, match="does not exist"):
        TextDataModule(tmp_path / "nope.jsonl").setup()
    with pytest.raises(ConfigError, match="val_fraction"):
        TextDataModule(tmp_path / "t.jsonl", val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ConfigError, match="format"):
        TextDataModule(tmp_path / "t.jsonl", format="dfew")  # type: ignore[arg-type]


def test_csv_with_another_text_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("Utterance,Emotion,Reason,Split\nI am thrilled!,Happiness,Exclamation.,train\n,sad,,\n")
    with pytest.raises(ManifestError, match=re.escape(f"{path}:3: field 'Utterance'")):
        read_text_manifest(path, "dfew", text_field="Utterance")
    errors: list[ManifestError] = []
    (rec,) = read_text_manifest(path, "dfew", text_field="Utterance", errors=errors)
    assert (rec.text, rec.label, rec.explanation, rec.split) == ("I am thrilled!", "happy", "Exclamation.", "train")


def test_emer_subtitles_become_the_text(tmp_path):
    path = tmp_path / "emer.csv"
    path.write_text(
        "names,emotions,subtitles,reasons\n"
        "sample_00000001,worried,I don't know what to do.,Her brows are knitted.\n"
        "sample_00000002,happy,,He smiles.\n"
    )
    with pytest.raises(ManifestError, match=re.escape(f"{path}:3: field 'subtitles'")):
        read_emer_text(path, "mafw")
    dm = TextDataModule(path, labels="mafw", format="emer", val_fraction=0.0)
    with pytest.raises(ManifestError, match="subtitles"):
        dm.setup()
    path.write_text(path.read_text().replace(",,He", ",What a day!,He"))
    dm = TextDataModule(path, labels="mafw", format="emer", val_fraction=0.0)
    dm.setup()
    samples = [dm.datasets["train"][i] for i in range(2)]
    assert [(s["id"], s["text"], s["label"], s["explanation"]) for s in samples] == [
        ("sample_00000001", "I don't know what to do.", "anxiety", "Her brows are knitted."),
        ("sample_00000002", "What a day!", "happiness", "He smiles."),
    ]
    assert samples[0]["label_id"] == dm.label_set.index("anxiety")


def test_manifest_splits_win_and_the_rest_is_seeded(tmp_path):
    path = _jsonl(tmp_path / "t.jsonl", ROWS)
    dm = TextDataModule(path, labels="dfew", val_fraction=0.5)
    dm.setup()
    # rows 3/4 carry splits; rows 1/2 have none -> seeded split of the unassigned (one to val)
    assert {r.id for r in dm.splits["test"]} == {"row4"}
    assert "row3" in {r.id for r in dm.splits["val"]}
    assert sorted(r.id for s in dm.splits.values() for r in s) == ["row1", "row2", "row3", "row4"]

    many = _many(tmp_path / "many.jsonl")

    def ids(seed: int) -> dict[str, list[str]]:
        m = TextDataModule(many, labels="dfew", val_fraction=0.2, test_fraction=0.1, seed=seed)
        m.setup()
        return {k: [r.id for r in v] for k, v in m.splits.items()}

    a = ids(0)
    assert [len(a[k]) for k in ("train", "val", "test")] == [14, 4, 2]
    assert ids(0) == a and ids(1) != a


def test_training_order_is_seeded_per_epoch(tmp_path):
    many = _many(tmp_path / "many.jsonl")

    def epoch_ids(seed: int, epoch: int, shuffle: bool = True) -> tuple[list[str], list[str]]:
        dm = TextDataModule(
            many, labels="dfew", val_fraction=0.0, test_fraction=0.0, batch_size=4, seed=seed, shuffle=shuffle
        )
        loader = dm.train_dataloader()  # sets up on demand
        loader.sampler.set_epoch(epoch)
        return [i for batch in loader for i in batch["ids"]], [r.id for r in dm.splits["train"]]

    e0, split = epoch_ids(0, 0)
    assert sorted(e0) == sorted(f"r{i}" for i in range(20))
    assert epoch_ids(0, 0)[0] == e0 and epoch_ids(0, 1)[0] != e0 and epoch_ids(5, 0)[0] != e0
    assert epoch_ids(0, 0, shuffle=False)[0] == split != e0  # unshuffled: the split's own (seeded) order
    batch = next(iter(TextDataModule(many, labels="dfew", val_fraction=0.2).val_dataloader()))
    assert set(batch) == {"ids", "texts", "labels", "label_ids", "explanations"}
    assert batch["label_ids"].dtype == torch.long


def test_empty_split_is_a_clear_error(tmp_path):
    dm = TextDataModule(_jsonl(tmp_path / "t.jsonl", ROWS[:2]), labels="dfew", val_fraction=0.0)
    with pytest.raises(ConfigError, match="'test' split .* is empty"):
        dm.test_dataloader()


def test_hparams_are_plain_and_load_weights_only(tmp_path):
    dm = TextDataModule(tmp_path / "t.jsonl", labels=["calm", "tense"], collate_fn=len)  # type: ignore[arg-type]
    buf = io.BytesIO()
    torch.save({"hyper_parameters": dict(dm.hparams)}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["hyper_parameters"]
    assert loaded["manifest"] == str(tmp_path / "t.jsonl") and "collate_fn" not in loaded
    assert list(dm.label_set) == ["calm", "tense"]


def test_synthetic_text_manifest_hides_the_conclusion(tmp_path):
    manifest = synthesize(
        tmp_path, num_clips=8, labels="dfew", seed=2, size=32, duration=0.5, inconsistent_fraction=0.25
    )
    clips = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows = [json.loads(line) for line in write_text_manifest(manifest).read_text().splitlines()]
    assert [r["id"] for r in rows] == [c["id"] for c in clips if c["explanation_consistent"]] and len(rows) == 6
    conclusions = {c for p in PROFILES for c in p.conclusion}
    for row in rows:
        ending = row["explanation"][len(row["text"]) + 1 :]
        assert row["explanation"].startswith(row["text"] + " ") and ending in conclusions
        assert not any(c in row["text"] for c in conclusions)
    everything = write_text_manifest(manifest, tmp_path / "all.jsonl", include_inconsistent=True)
    dm = TextDataModule(everything, labels="dfew", val_fraction=0.0)
    dm.setup()
    assert sum(len(v) for v in dm.splits.values()) == 8


def test_text_collator_labels_only_the_assistant_turn(tmp_path, tiny_tokenizer):
    dm = TextDataModule(_jsonl(tmp_path / "t.jsonl", ROWS), labels="dfew", val_fraction=0.0, batch_size=2)
    dm.collate_fn = TextCollator(processor=tiny_tokenizer, mode="train")
    batch = next(iter(dm.train_dataloader()))
    samples = {s["id"]: s for s in (dm.datasets["train"][i] for i in range(2))}
    assert batch["input_ids"].shape[0] == 2
    for i, sid in enumerate(batch["meta"]["ids"]):
        s, labels = samples[sid], batch["labels"][i]
        kept = labels[labels != IGNORE_INDEX]
        assert tiny_tokenizer.decode(kept) == format_target(s["explanation"], s["label"]) + "<|im_end|>"
        prompt = batch["input_ids"][i][(labels == IGNORE_INDEX) & batch["attention_mask"][i].bool()]
        assert s["text"] in tiny_tokenizer.decode(prompt)
    assert batch["meta"]["label_id"].tolist() == [samples[i]["label_id"] for i in batch["meta"]["ids"]]


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    from ecr.fixtures.tiny_models import build_tiny_tokenizer

    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"), vocab_size=512)
