"""ClipDataModule: seeded splits and batches, workers == no workers, the cache, the clip error policy, exact
resume (sampler order = f(seed, epoch), loader state) and weights-only-loadable checkpoints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
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


def test_predict_split_selects_the_clips_the_predict_loop_sees(synth_dir: Path) -> None:
    for split in ("val", "train"):  # (the 16-clip set has no test rows)
        dm = _dm(synth_dir, val_fraction=0.25, predict_split=split)
        dm.setup("predict")
        seen = [i for batch in dm.predict_dataloader() for i in batch["ids"]]
        assert seen == [r.id for r in dm.splits[split]]  # every clip of that split, in order, unshuffled
    with pytest.raises(ConfigError, match="predict_split"):
        _dm(synth_dir, predict_split="dev")


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
    dm = _dm(synth_dir, manifest=_manifest_with_bad_rows(synth_dir, tmp_path), on_error="skip", val_fraction=0.0)
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


# ----------------------------------------------------------------------------- resume determinism


def test_epoch_sampler_order_is_a_function_of_seed_and_epoch() -> None:
    from ecr.data.sampler import EpochSampler

    def order(seed: int, epoch: int, **kw: object) -> list[int]:
        s = EpochSampler(range(23), shuffle=True, seed=seed, **kw)  # type: ignore[arg-type]
        s.set_epoch(epoch)
        return list(s)

    a = order(5, 3)
    assert sorted(a) == list(range(23))
    for _ in range(2):  # repeated passes and fresh samplers agree: no hidden RNG state
        assert order(5, 3) == a
    fresh = EpochSampler(range(23), shuffle=True, seed=5)
    first = list(fresh)
    fresh.set_epoch(3)
    assert list(fresh) == a
    fresh.set_epoch(0)
    assert list(fresh) == first == order(5, 0)
    assert order(5, 4) != a
    assert order(6, 3) != a
    assert list(EpochSampler(range(5), shuffle=False, seed=5)) == [0, 1, 2, 3, 4]
    # DDP: the ranks partition one (seed, epoch) order
    shards = [order(5, 3, num_replicas=2, rank=r) for r in (0, 1)]
    assert sorted(shards[0] + shards[1][:-1]) == list(range(23))  # 23 -> 2 x 12, one index repeated
    # a one-shot skip drops a prefix of the same order
    s = EpochSampler(range(23), shuffle=True, seed=5)
    s.set_epoch(3)
    s.skip_next(7)
    assert list(s) == a[7:]
    assert list(s) == a


def _int_loader(seed: int = 1, batch_size: int = 3, n: int = 11, **kw: object):
    from ecr.data.loader import ResumableDataLoader
    from ecr.data.sampler import EpochSampler

    data = list(range(n))
    sampler = EpochSampler(data, shuffle=True, seed=seed)
    return ResumableDataLoader(data, batch_size=batch_size, sampler=sampler, collate_fn=list, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_state_resumes_the_interrupted_epoch_exactly(num_workers: int) -> None:
    full = _int_loader(num_workers=num_workers)
    full.sampler.set_epoch(2)
    expected = list(full)  # [4 batches]
    interrupted = _int_loader(num_workers=num_workers)
    interrupted.sampler.set_epoch(2)
    it = iter(interrupted)
    seen = [next(it), next(it)]
    state = interrupted.state_dict()
    assert state == {"epoch": 2, "batches": 2, "batch_size": 3, "num_samples": 11}
    resumed = _int_loader(num_workers=num_workers)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)  # what Lightning does at the start of the resumed epoch
    rest = list(resumed)
    assert seen + rest == expected
    assert resumed.state_dict()["batches"] == 4  # the pass is complete
    resumed.sampler.set_epoch(3)
    nxt = _int_loader(num_workers=num_workers)
    nxt.sampler.set_epoch(3)
    assert list(resumed) == list(nxt)  # the skip is used once; the next epoch is whole


def test_loader_state_of_a_finished_pass_or_another_epoch_skips_nothing() -> None:
    loader = _int_loader()
    loader.sampler.set_epoch(1)
    whole = list(loader)
    loader.load_state_dict({"epoch": 1, "batches": 4, "batch_size": 3, "num_samples": 11})  # epoch boundary
    assert list(loader) == whole
    loader.load_state_dict({"epoch": 0, "batches": 2, "batch_size": 3, "num_samples": 11})  # not this epoch
    assert list(loader) == whole


def test_loader_state_with_another_batch_size_warns_and_restarts_the_epoch() -> None:
    loader = _int_loader(batch_size=2)
    with pytest.warns(UserWarning, match="cannot resume mid-epoch"):
        loader.load_state_dict({"epoch": 0, "batches": 2, "batch_size": 3, "num_samples": 11})
    assert sum(len(b) for b in loader) == 11


class _LabelMean(L.LightningModule):
    """The smallest real module: fits one scalar to the batches' label ids, records the ids it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[list[str]] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen.append(list(batch["ids"]))
        return (self.w - batch["label_ids"].float().mean()) ** 2

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _StopAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _fit(dm: ClipDataModule, tmp: Path, *, stop: int | None = None, ckpt: Path | None = None) -> _LabelMean:
    module = _LabelMean()
    callbacks: list[L.Callback] = []
    if stop is not None:
        callbacks = [
            _StopAt(stop),
            L.pytorch.callbacks.ModelCheckpoint(tmp / "ck", save_last=True, every_n_train_steps=1),
        ]
    L.Trainer(
        accelerator="cpu", devices=1, max_epochs=3, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=stop is not None,
        default_root_dir=tmp, callbacks=callbacks,
    ).fit(module, datamodule=dm, ckpt_path=ckpt)  # fmt: skip
    return module


def test_shuffled_fit_resumes_at_epoch_boundary_and_mid_epoch_like_an_uninterrupted_run(
    synth_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    full = _fit(_dm(synth_dir, batch_size=4, cache_dir=cache), tmp_path)
    per_epoch = len(full.seen) // 3
    assert per_epoch >= 3
    epochs = [full.seen[e * per_epoch : (e + 1) * per_epoch] for e in range(3)]
    assert epochs[0] != epochs[1] != epochs[2]  # reshuffled every epoch
    for stop in (per_epoch, per_epoch + 2):  # an epoch boundary; mid-epoch
        first = _fit(_dm(synth_dir, batch_size=4, cache_dir=cache), tmp_path / str(stop), stop=stop)
        assert first.seen == full.seen[:stop]
        resumed = _fit(
            _dm(synth_dir, batch_size=4, cache_dir=cache),
            tmp_path,
            ckpt=tmp_path / str(stop) / "ck" / "last.ckpt",
        )
        assert resumed.seen == full.seen[stop:], stop
        assert torch.equal(resumed.w, full.w)


def test_checkpoint_of_a_datamodule_built_with_paths_loads_weights_only(synth_dir: Path, tmp_path: Path) -> None:
    dm = _dm(synth_dir, cache_dir=tmp_path / "cache", batch_size=2)  # root/manifest/cache_dir: Path objects
    assert isinstance(dm.hparams["root"], str)
    assert isinstance(dm.hparams["cache_dir"], str)
    assert dm.root == synth_dir
    assert dm.cache_dir == tmp_path / "cache"
    _fit(dm, tmp_path, stop=1)
    ckpt = torch.load(tmp_path / "ck" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["datamodule_hyper_parameters"]["manifest"] == str(synth_dir / "manifest.jsonl")
    loader_states = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]  # saved by Lightning
    assert loader_states[0]["batches"] == 1
