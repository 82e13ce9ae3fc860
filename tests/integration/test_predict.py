"""`ecr predict` on the tiny Omni model and real synthetic clips, then `ecr score` on its file.

- one JSONL row per test clip, in dataset order, with the documented fields; media encoded once per batch;
- greedy decoding reproduces itself, and seeded sampling reproduces itself too (and differs from another seed);
- a stage checkpoint loads through `checkpoint:`; the verifier's sentence labels are stored and `ecr score` gives
  the same numbers from them as from the verifier folder;
- `merge_parts` keeps rows once, in dataset order, and refuses gaps; with 2 DDP processes (slow) one file is
  written, without duplicates or gaps;
- best-of-N: one generate call per batch draws N candidates per clip (media encoded once), every candidate is
  recorded with its score, the kept one is the verifier's choice, and seeded runs reproduce;
- `ecr test` (Lightning's test loop): logs test/* to TensorBoard and writes the predictions file and a metrics.json
  with the numbers `ecr score` computes from that file (compound truth included); with 2 DDP processes (slow) the
  synced metrics count each clip once and equal the single-process ones;
- `ecr predict` / `ecr test --config configs/demo/predict.yaml` run on the demo outputs when they exist.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from support.tiny import SMALL, clip_data, synth_clips

from ecr.data import ClipDataModule
from ecr.evaluation import PredictionWriter, merge_parts
from ecr.evaluation.judges import StoredVerifierJudge, VerifierJudge
from ecr.evaluation.predictions import read_predictions
from ecr.evaluation.score import score_command, score_predictions
from ecr.fixtures import build_tiny_classifier
from ecr.labels import DFEW, resolve_label_space
from ecr.metrics.rerank import CandidateScore, rank_key
from ecr.models import PolicyConfig
from ecr.modules.predict import GenerationSettings, PredictModule
from ecr.modules.wiring import connect
from ecr.rl.rewards import ExplanationReward
from tests.unit.evaluation.fakes import KeywordVerifier

REPO = Path(__file__).resolve().parents[2]
FIELDS = {"id", "label", "prediction", "answer_text", "think", "completion", "num_tokens", "truncated",
          "sentences", "verifier", "generation", "seed", "model"}  # fmt: skip


@pytest.fixture(scope="module")
def verifier(tmp_path_factory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("verifier"), resolve_label_space("dfew"))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return synth_clips(tmp_path_factory.mktemp("clips"), num_clips=5, split="test")


def _data(root: Path, batch_size: int = 2, manifest: str = "manifest.jsonl") -> ClipDataModule:
    return clip_data(root, batch_size, manifest)


def _predict(module: PredictModule, clips: Path, out: Path, **trainer_kw) -> list[dict]:
    writer = PredictionWriter(str(out))
    trainer = L.Trainer(
        accelerator="cpu", devices=1, precision="32-true", logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[writer], default_root_dir=out.parent, **trainer_kw,
    )  # fmt: skip
    trainer.predict(module, datamodule=connect(module, _data(clips)), return_predictions=False)
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_predict_writes_one_row_per_clip_and_scores(tiny: Path, verifier: Path, clips: Path, tmp_path: Path) -> None:
    module = PredictModule(
        PolicyConfig(model=str(tiny), inputs=SMALL),
        verifier=str(verifier),
        generation=GenerationSettings(max_new_tokens=12),
    )
    encodes = []
    original = module.backbone.encode_prompt
    module.backbone.encode_prompt = lambda batch: encodes.append(len(batch["meta"]["ids"])) or original(batch)  # type: ignore[method-assign]
    rows = _predict(module, clips, tmp_path / "pred.jsonl")
    manifest = [json.loads(line) for line in (clips / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [Path(m["video"]).stem for m in manifest]  # dataset order, no gap
    assert encodes == [2, 2, 1]  # several clips per batch, media encoded once per batch
    assert not (tmp_path / "pred.jsonl.parts").exists()
    for r in rows:
        assert set(r) >= FIELDS
        assert r["label"] in DFEW.labels and (r["prediction"] is None or r["prediction"] in DFEW.labels)
        assert r["generation"]["do_sample"] is False and r["model"]["model"] == str(tiny)
        assert r["verifier"]["mapping"]["happy"] == "happy" and 0 < r["num_tokens"] <= 12
        assert r["sentences"] is None or all(1 <= len(s["labels"]) <= 2 for s in r["sentences"])
    assert module.policy_config.lora.enabled is False  # no fresh identity LoRA at inference
    assert not any(p.requires_grad for p in module.parameters())
    # greedy: the same completions again
    again = _predict(
        PredictModule(PolicyConfig(model=str(tiny), inputs=SMALL), generation={"max_new_tokens": 12}),
        clips, tmp_path / "again.jsonl",
    )  # fmt: skip
    assert [r["completion"] for r in again] == [r["completion"] for r in rows]
    assert "sentences" not in again[0]
    # scoring: stored sentence labels give the numbers the verifier folder gives
    preds = read_predictions(tmp_path / "pred.jsonl", DFEW)
    stored = score_predictions(preds, DFEW, StoredVerifierJudge(DFEW))
    direct = score_predictions(preds, DFEW, VerifierJudge(verifier, DFEW))
    for key in ("war", "uar", "epc", "eea", "fcr", "missing", "quadrants"):
        assert stored[key] == direct[key], key
    assert score_command(tmp_path / "pred.jsonl", "dfew", out=tmp_path / "metrics.json") == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 <= metrics["war"] <= 1 and 0 <= metrics["uar"] <= 1 and metrics["n"] == len(rows)


def test_seeded_sampling_reproduces(tiny: Path, clips: Path, tmp_path: Path) -> None:
    def sampled(seed: int, name: str) -> list[str]:
        gen = GenerationSettings(do_sample=True, temperature=1.5, max_new_tokens=10)
        module = PredictModule(PolicyConfig(model=str(tiny), inputs=SMALL), generation=gen, seed=seed)
        rows = _predict(module, clips, tmp_path / name, limit_predict_batches=1)
        assert all(r["sampling_seed"] is not None and r["seed"] == seed for r in rows)
        return [r["completion"] for r in rows]

    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = sampled(7, "a.jsonl")
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched (forked per batch)
    assert sampled(7, "b.jsonl") == first
    assert sampled(8, "c.jsonl") != first


def test_merge_parts_orders_dedupes_and_refuses_gaps(tmp_path: Path) -> None:
    a, b = tmp_path / "rank0.jsonl", tmp_path / "rank1.jsonl"
    a.write_text("".join(json.dumps({"id": i, "x": 0}) + "\n" for i in ("c0", "c2", "c4")))
    b.write_text("".join(json.dumps({"id": i, "x": 1}) + "\n" for i in ("c1", "c3", "c0")))  # c0: padding duplicate
    rows, dups = merge_parts([a, b], ["c0", "c1", "c2", "c3", "c4"], set())
    assert [r["id"] for r in rows] == ["c0", "c1", "c2", "c3", "c4"] and dups == 1 and rows[0]["x"] == 0
    rows, _ = merge_parts([a, b], ["c0", "c1", "c2", "c3", "c4", "c5"], {"c5"})  # c5 skipped: not a gap
    assert len(rows) == 5
    with pytest.raises(RuntimeError, match="1 clip\\(s\\) of the predict split have no row"):
        merge_parts([a, b], ["c0", "c1", "c2", "c3", "c4", "c5"], set())


def test_a_stage_checkpoint_loads_through_checkpoint(tiny: Path, clips: Path, tmp_path: Path) -> None:
    from ecr.modules.sft import SFTModule

    policy = PolicyConfig(model=str(tiny), inputs=SMALL, lora={"r": 4, "dropout": 0.0})
    sft = SFTModule(policy)
    sft.configure_model()
    with torch.no_grad():
        for name, p in sft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained-looking adapter, so the checkpoint changes the outputs
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.strategy.connect(sft)
    ckpt = tmp_path / "sft.ckpt"
    trainer.save_checkpoint(ckpt)
    module = PredictModule(checkpoint=str(ckpt), generation={"max_new_tokens": 8})
    assert module.policy_config.lora.enabled and module.policy_config.lora.r == 4
    rows = _predict(module, clips, tmp_path / "ckpt.jsonl", limit_predict_batches=1)
    assert rows[0]["model"]["checkpoint"] == str(ckpt)
    base = _predict(
        PredictModule(PolicyConfig(model=str(tiny), inputs=SMALL), generation={"max_new_tokens": 8}),
        clips, tmp_path / "base.jsonl", limit_predict_batches=1,
    )  # fmt: skip
    assert [r["completion"] for r in rows] != [r["completion"] for r in base]


@pytest.mark.slow
def test_two_ddp_processes_write_one_file(tiny: Path, clips: Path, tmp_path: Path) -> None:
    module = PredictModule(PolicyConfig(model=str(tiny), inputs=SMALL), generation={"max_new_tokens": 8})
    out = tmp_path / "ddp.jsonl"
    writer = PredictionWriter(str(out))
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", precision="32-true", logger=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[writer], default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.predict(module, datamodule=connect(module, _data(clips, batch_size=1)), return_predictions=False)
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    manifest = [json.loads(line) for line in (clips / "manifest.jsonl").read_text().splitlines()]
    assert ids == [Path(m["video"]).stem for m in manifest]  # 5 clips over 2 ranks: no duplicate, no gap
    single = _predict(
        PredictModule(PolicyConfig(model=str(tiny), inputs=SMALL), generation={"max_new_tokens": 8}),
        clips, tmp_path / "one.jsonl",
    )  # fmt: skip
    assert [json.loads(line)["completion"] for line in out.read_text().splitlines()] == [
        r["completion"] for r in single
    ]


# ------------------------------------------------------------------------------------------------ best-of-N
SAMPLED = GenerationSettings(do_sample=True, temperature=1.5, max_new_tokens=10)
CRAFTED = [  # candidate j of every clip: the keyword verifier prefers j = 1 (its explanation supports its answer)
    "<think>She is sad. Sad eyes.</think>\n<answer>happy</answer>",
    "<think>She is happy. A happy voice.</think>\n<answer>happy</answer>",
    "<think>She is happy.</think>\n<answer>bored</answer>",
]


class DeviceKeywordVerifier(KeywordVerifier):
    def to(self, device: object) -> DeviceKeywordVerifier:  # the module moves its verifier to its device
        return self


def test_best_of_n_keeps_the_candidate_the_verifier_prefers(
    tiny: Path, verifier: Path, clips: Path, tmp_path: Path
) -> None:
    def module() -> PredictModule:
        return PredictModule(
            PolicyConfig(model=str(tiny), inputs=SMALL), verifier=str(verifier), generation=SAMPLED, seed=3,
            num_samples=3, rerank="verifier",
        )  # fmt: skip

    real = module()
    calls: list[tuple[str, int]] = []
    encode, generate = real.backbone.encode_prompt, real.backbone.generate
    real.backbone.encode_prompt = lambda b: calls.append(("encode", len(b["meta"]["ids"]))) or encode(b)  # type: ignore[method-assign]
    real.backbone.generate = lambda p, **kw: (
        calls.append(("generate", p.batch_size * kw.get("group_size", 1))) or generate(p, **kw)
    )  # type: ignore[method-assign]
    rows = _predict(real, clips, tmp_path / "real.jsonl", limit_predict_batches=1)
    assert calls == [("encode", 2), ("generate", 6)]  # media once per batch, ONE generate call (2 prompts, G=3)
    for r in rows:
        assert len(r["candidates"]) == 3 and r["rerank"] == {"method": "verifier", "num_samples": 3}
        kept = r["candidates"][r["chosen"]]
        assert (kept["completion"], kept["prediction"]) == (r["completion"], r["prediction"])
        scores = [CandidateScore(c["prediction"], c["score"], c["well_formed"]) for c in r["candidates"]]
        assert r["chosen"] == max(range(3), key=lambda j: rank_key(scores[j], j))
        assert r["sentences"] is None or isinstance(r["sentences"], list)  # the kept candidate's
    again = _predict(module(), clips, tmp_path / "again.jsonl", limit_predict_batches=1)
    assert [r["candidates"] for r in again] == [r["candidates"] for r in rows]  # seeded: the same N candidates

    crafted = module()
    crafted.reward = ExplanationReward(DeviceKeywordVerifier(), DFEW)  # a verifier whose preferences are known
    decode = crafted.backbone.decode
    crafted.backbone.decode = lambda ids: [CRAFTED[k % 3] for k in range(len(decode(ids)))]  # type: ignore[method-assign]
    rows = _predict(crafted, clips, tmp_path / "crafted.jsonl")
    assert [r["chosen"] for r in rows] == [1] * 5
    assert all(r["completion"] == CRAFTED[1] and r["prediction"] == "happy" for r in rows)
    assert [c["score"] for c in rows[0]["candidates"]] == [0.0, 1.0, None]


# ------------------------------------------------------------------------------------------------ ecr test
HEADLINE = ("war", "uar", "uar_classes", "n", "unparseable", "per_class_recall", "support", "confusion", "epc",
            "eea", "fcr", "judged", "missing", "quadrants", "compound")  # fmt: skip
POOL = ["She smiles.", "He frowns.", "The voice is flat.", "Her brows rise.", "A harsh tone.", "Nothing moves."]


class CraftedPredictModule(PredictModule):
    """The tiny model's real (greedy) completions turned into well-formed ones, deterministically, so that the
    random verifier reads real think blocks and answers parse: the metrics then have something to count."""

    def configure_model(self) -> None:
        super().configure_model()
        decode = self.backbone.decode

        def crafted(ids: torch.Tensor) -> list[str]:
            out = []
            for text in decode(ids):
                h = sum(text.encode()) + len(text)
                think = " ".join(POOL[(h + i) % len(POOL)] for i in range(1 + h % 3))
                out.append(f"<think>{think}</think>\n<answer>{DFEW.labels[h % 7]}</answer>")
            return out

        self.backbone.decode = crafted  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def compound_clips(clips: Path) -> Path:
    """The clips, with a second manifest that gives three of the five rows a compound truth (`labels`)."""
    rows = [json.loads(line) for line in (clips / "manifest.jsonl").read_text().splitlines()]
    for i, r in enumerate(rows[:3]):
        r["labels"] = [r["label"], DFEW.labels[(DFEW.labels.index(r["label"]) + 1 + i) % 7]]
    (clips / "compound.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return clips


def _test(module: PredictModule, root: Path, out: Path, **trainer_kw) -> tuple[dict, dict]:
    from lightning.pytorch.loggers import TensorBoardLogger

    trainer_kw.setdefault("devices", 1)
    trainer = L.Trainer(
        accelerator="cpu", precision="32-true", logger=TensorBoardLogger(out.parent, name="tb"),
        enable_progress_bar=False, enable_model_summary=False, callbacks=[PredictionWriter(str(out))],
        default_root_dir=out.parent, **trainer_kw,
    )  # fmt: skip
    (logged,) = trainer.test(module, datamodule=connect(module, _data(root, batch_size=1, manifest="compound.jsonl")))
    return logged, json.loads(out.with_name(out.name + ".metrics.json").read_text())


def test_ecr_test_logs_and_writes_what_ecr_score_computes(
    tiny: Path, verifier: Path, compound_clips: Path, tmp_path: Path
) -> None:
    module = CraftedPredictModule(
        PolicyConfig(model=str(tiny), inputs=SMALL), verifier=str(verifier), generation={"max_new_tokens": 8}
    )
    out = tmp_path / "test.jsonl"
    logged, metrics = _test(module, compound_clips, out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and [("labels" in r) for r in rows] == [True] * 3 + [False] * 2
    assert score_command(out, "dfew", out=tmp_path / "score.json", bootstrap=0) == 0
    scored = json.loads((tmp_path / "score.json").read_text())
    assert scored["judged"] > 0 and scored["compound"]["n"] == 3  # real judged clips and compound truth
    for key in HEADLINE:
        assert metrics[key] == scored[key], key
    for key in ("war", "uar", "epc", "eea", "fcr", "compound"):
        value = metrics[key]["accuracy"] if key == "compound" else metrics[key]
        assert logged[f"test/{key}"] == pytest.approx(value), key
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb" / "version_0"))
    events.Reload()
    assert {"test/war", "test/uar", "test/epc", "test/eea", "test/fcr"} <= set(events.Tags()["scalars"])
    assert events.Scalars("test/war")[0].value == pytest.approx(metrics["war"])


@pytest.mark.slow
def test_ecr_test_on_two_ddp_processes_counts_each_clip_once(
    tiny: Path, verifier: Path, compound_clips: Path, tmp_path: Path
) -> None:
    def module() -> PredictModule:
        policy = PolicyConfig(model=str(tiny), inputs=SMALL)
        return CraftedPredictModule(policy, verifier=str(verifier), generation={"max_new_tokens": 8})

    # 5 clips on 2 ranks: Lightning's test sampler pads rank 1 with a repeat of clip 0
    _, ddp = _test(module(), compound_clips, tmp_path / "ddp" / "p.jsonl", devices=2, strategy="ddp_spawn")
    _, single = _test(module(), compound_clips, tmp_path / "one" / "p.jsonl")
    assert ddp["n"] == 5 and sum(map(sum, ddp["confusion"]["matrix"])) == 5
    assert score_command(tmp_path / "ddp" / "p.jsonl", "dfew", out=tmp_path / "score.json", bootstrap=0) == 0
    scored = json.loads((tmp_path / "score.json").read_text())
    for key in HEADLINE:
        assert ddp[key] == single[key] == scored[key], key


DEMO = [REPO / "runs/demo_sft/export/merged", REPO / "runs/demo_erv/verifier", REPO / "demo_data/synth"]


@pytest.mark.slow
@pytest.mark.skipif(not all(p.exists() for p in DEMO), reason="demo outputs missing: run ./scripts/demo.sh + export")
def test_demo_predict_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ecr.cli import cli_main

    monkeypatch.chdir(REPO)
    monkeypatch.setattr("sys.argv", ["ecr"])
    out = tmp_path / "demo.jsonl"
    cli_main([
        "predict", "--config", "configs/demo/predict.yaml", "--trainer.callbacks.init_args.output", str(out),
        "--trainer.default_root_dir", str(tmp_path),
    ])  # fmt: skip
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8 and all(r["sentences"] is not None or r["think"] is None for r in rows)
    assert score_command(out, "dfew", out=tmp_path / "m.json") == 0
    # `ecr test` on the same config: TensorBoard scalars + the predictions file + metrics.json = `ecr score`'s numbers
    tested = tmp_path / "tested.jsonl"
    cli_main([
        "test", "--config", "configs/demo/predict.yaml", "--trainer.callbacks.init_args.output", str(tested),
        "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
    ])  # fmt: skip
    metrics = json.loads(tested.with_name(tested.name + ".metrics.json").read_text())
    scored = json.loads((tmp_path / "m.json").read_text())
    assert [json.loads(line)["completion"] for line in tested.read_text().splitlines()] == [
        r["completion"] for r in rows
    ]
    for key in ("war", "uar", "confusion", "epc", "eea", "fcr", "quadrants"):
        assert metrics[key] == scored[key], key
    assert list(tmp_path.glob("tb/version_*/events.out.tfevents.*"))
