"""ClipDataModule: seeded splits and batches, workers == no workers, the cache, the clip error policy."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from ecr.data import ClipDataModule, ClipRecord, assign_splits
from ecr.errors import ClipError, ConfigError, ManifestError


def _dm(synth_dir: Path, **kw: object) -> ClipDataModule:
    args = {
        "root": synth_dir,
        "manifest": synth_dir / "manifest.jsonl",
        "labels": "dfew",
        "batch_size": 3,
        "num_frames": 4,
        "seed": 7,
    }
    args.update(kw)
    return ClipDataModule(**args)  # type: ignore[arg-type]


def _assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x["ids"] == y["ids"]
        assert torch.equal(x["frames"], y["frames"])
        assert torch.equal(x["label_ids"], y["label_ids"])
        assert all(torch.equal(p, q) for p, q in zip(x["audio"], y["audio"]))


def test_setup_reads_manifest_and_uses_its_splits(synth_dir: Path) -> None:
    dm = _dm(synth_dir, val_fraction=0.0)
    assert dm.splits is None
    assert dm.label_set.name == "dfew"
    dm.setup("fit")
    rows = [json.loads(line) for line in (synth_dir / "manifest.jsonl").read_text().splitlines()]
    for split in ("train", "val", "test"):
        assert sorted(r.id for r in dm.splits[split]) == sorted(r["id"] for r in rows if r["split"] == split)
    carved = _dm(synth_dir, val_fraction=0.25)  # the 16-clip set has no val rows: val is carved from train
    carved.setup("fit")
    assert len(carved.splits["val"]) == round(0.25 * len(dm.splits["train"])) > 0
    rec = dm.splits["train"][0]
    assert "explanation_consistent" in rec.meta


def test_manifest_is_read_in_setup_not_init(tmp_path: Path) -> None:
    dm = ClipDataModule(root=tmp_path, manifest=tmp_path / "missing.jsonl", labels="dfew")
    with pytest.raises(ManifestError, match="missing.jsonl"):
        dm.setup("fit")
    with pytest.raises(ConfigError, match="labels"):
        ClipDataModule(root=tmp_path, manifest=tmp_path / "m.jsonl")
    with pytest.raises(ConfigError, match="on_error"):
        ClipDataModule(root=tmp_path, manifest="m.jsonl", labels="dfew", on_error="ignore")  # type: ignore[arg-type]


def test_batches_are_seeded_and_identical_with_two_workers(synth_dir: Path) -> None:
    dm0 = _dm(synth_dir, num_workers=0)
    dm0.setup("fit")
    first = list(dm0.train_dataloader())
    batch = first[0]
    assert batch["frames"].shape == (3, 4, 3, 64, 64)
    assert batch["frames"].dtype == torch.uint8
    assert batch["frame_times"].shape == (3, 4)
    assert batch["label_ids"].dtype == torch.long
    assert batch["sample_rate"] == 16000
    assert batch["audio"][0].dtype == torch.float32
    assert [dm0.label_set.labels[i] for i in batch["label_ids"]] == batch["labels"]
    dm2 = _dm(synth_dir, num_workers=2)
    dm2.setup("fit")
    _assert_same_batches(first, list(dm2.train_dataloader()))
    other_seed = _dm(synth_dir, seed=8)
    other_seed.setup("fit")
    assert [b["ids"] for b in other_seed.train_dataloader()] != [b["ids"] for b in first]
    # validation is not shuffled: manifest order
    assert [i for b in dm0.val_dataloader() for i in b["ids"]] == [r.id for r in dm0.splits["val"]]


def test_cache_is_hit_and_returns_identical_tensors(synth_dir: Path, tmp_path: Path) -> None:
    plain = _dm(synth_dir)
    plain.setup("fit")
    reference = list(plain.train_dataloader())
    dm = _dm(synth_dir, cache_dir=tmp_path / "cache")
    dm.setup("fit")
    ds = dm.datasets["train"]
    _assert_same_batches(reference, list(dm.train_dataloader()))
    n = len(ds)
    assert ds.decode_count == n
    assert ds.cache_hits == 0
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == n
    _assert_same_batches(reference, list(dm.train_dataloader()))  # second epoch: from the cache
    assert ds.decode_count == n
    assert ds.cache_hits == n
    # a different decoding setting or a touched file is a different key
    rec = ds.records[0]
    key = ds.cache.key(rec, num_frames=4, sample_rate=16000)
    assert key != ds.cache.key(rec, num_frames=8, sample_rate=16000)
    st = os.stat(rec.video)
    os.utime(rec.video, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    try:
        assert ds.cache.key(rec, num_frames=4, sample_rate=16000) != key
    finally:
        os.utime(rec.video, ns=(st.st_atime_ns, st.st_mtime_ns))


def _manifest_with_bad_rows(synth_dir: Path, tmp_path: Path) -> Path:
    rows = [json.loads(line) for line in (synth_dir / "manifest.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"][:5]
    (synth_dir / "broken.mp4").write_bytes(b"not a video at all" * 50)
    train.insert(1, {"video": "broken.mp4", "label": "sad", "split": "train", "id": "broken"})
    train.insert(4, {"video": "gone.mp4", "label": "sad", "split": "train", "id": "gone"})
    m = tmp_path / "with_bad.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in train))
    return m


def test_skip_policy_drops_failed_clips_and_reports_them(synth_dir: Path, tmp_path: Path, capsys) -> None:
    dm = _dm(
        synth_dir, manifest=_manifest_with_bad_rows(synth_dir, tmp_path), on_error="skip", val_fraction=0.0
    )
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    ids = [i for b in batches for i in b["ids"]]
    assert len(ids) == 5
    assert "broken" not in ids
    assert "gone" not in ids
    assert sorted(f.id for f in dm.skipped["train"]) == ["broken", "gone"]
    assert {f.reason for f in dm.skipped["train"]} == {"unreadable"}
    err = capsys.readouterr().err
    assert "skipped 2 clip(s)" in err
    assert "broken.mp4" in err
    assert "gone.mp4" in err


def test_raise_policy_raises_the_clip_error_from_a_worker(synth_dir: Path, tmp_path: Path) -> None:
    dm = _dm(
        synth_dir,
        manifest=_manifest_with_bad_rows(synth_dir, tmp_path),
        on_error="raise",
        val_fraction=0.0,
        num_workers=2,
        shuffle=False,
    )
    dm.setup("fit")
    with pytest.raises(ClipError, match=r"broken.mp4: unreadable: .*with_bad.jsonl:2"):
        list(dm.train_dataloader())


def test_collate_fn_is_injected_by_the_task(synth_dir: Path) -> None:
    dm = _dm(synth_dir)
    dm.setup("fit")

    def task_collate(samples):  # noqa: ANN001, ANN202 - a stage's collator
        return {
            "n": len(samples),
            "ids": [s["id"] for s in samples],
            "mean": [s["frames"].float().mean() for s in samples],
        }

    dm.collate_fn = task_collate
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"n", "ids", "mean"}
    assert batch["n"] == 3
    dm.collate_fn = None
    assert "frames" in next(iter(dm.train_dataloader()))


def test_assign_splits_is_deterministic_for_rows_without_split() -> None:
    recs = [ClipRecord(id=str(i), video=Path(f"{i}.mp4"), label="sad") for i in range(20)]
    a = assign_splits(recs, val_fraction=0.2, test_fraction=0.1, seed=3)
    b = assign_splits(recs, val_fraction=0.2, test_fraction=0.1, seed=3)
    assert {k: len(v) for k, v in a.items()} == {"train": 14, "val": 4, "test": 2}
    assert a == b
    assert assign_splits(recs, val_fraction=0.2, test_fraction=0.1, seed=4) != a
    only_train = [ClipRecord(id=str(i), video=Path("x.mp4"), label="sad", split="train") for i in range(10)]
    c = assign_splits(only_train, val_fraction=0.2, test_fraction=0.0, seed=0)
    assert len(c["val"]) == 2
    assert len(c["train"]) == 8


def test_loader_survives_lightnings_distributed_sampler_swap(synth_dir: Path) -> None:
    from lightning.fabric.utilities.data import _replace_dunder_methods
    from lightning.pytorch.utilities.data import _update_dataloader
    from torch.utils.data import DataLoader, DistributedSampler

    dm = _dm(synth_dir, on_error="raise")
    dm.setup("fit")
    with _replace_dunder_methods(DataLoader, "dataset"):  # what Lightning does around *_dataloader() hooks
        loader = dm.train_dataloader()
    sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=1, shuffle=True, seed=0)
    ddp_loader = _update_dataloader(loader, sampler)
    assert type(ddp_loader) is type(loader)
    assert ddp_loader.on_error == "raise"
    ids = [i for b in ddp_loader for i in b["ids"]]
    assert len(ids) == len(sampler)
    assert set(ids) <= {r.id for r in dm.splits["train"]}


@pytest.mark.parametrize("name", ["synth", "custom", "dfew", "mafw", "emer"])
def test_shipped_data_configs_build_the_datamodule(name: str) -> None:
    import yaml
    from jsonargparse import ArgumentParser

    cfg = yaml.safe_load((Path(__file__).parents[3] / "configs" / "data" / f"{name}.yaml").read_text())
    assert cfg["data"]["class_path"] == "ecr.data.ClipDataModule"
    parser = ArgumentParser()
    parser.add_class_arguments(ClipDataModule, "data")
    ns = parser.parse_object({"data": cfg["data"]["init_args"]})
    dm = parser.instantiate_classes(ns).data
    assert isinstance(dm, ClipDataModule)
    assert dm.splits is None
    assert len(dm.label_set) in (4, 7, 11)


def test_a_pass_in_which_every_clip_fails_raises_even_when_skipping(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").write_bytes(b"junk" * 30)
    rows = [
        {"video": "a.mp4", "label": "sad", "split": "train"},
        {"video": "b.mp4", "label": "sad", "split": "train"},
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dm = ClipDataModule(root=tmp_path, manifest=tmp_path / "m.jsonl", labels="dfew", val_fraction=0.0)
    with pytest.raises(ClipError, match="all 2 clips of this pass failed"):
        list(dm.train_dataloader())  # setup() runs on demand
