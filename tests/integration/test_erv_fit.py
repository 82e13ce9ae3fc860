"""End to end: `ecr label` (lexicon teacher) on EMER-style explanations, then `ecr fit --config
configs/demo/erv.yaml` for a few steps: TensorBoard events, best checkpoint, exported verifier folder that
`load_verifier` reloads with identical probabilities, and an explanation reward computed with it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ecr.cli import cli_main, main
from ecr.fixtures.synth import compose_explanation, profile_for
from ecr.labels import DFEW_LABELS
from ecr.models.verifier import load_verifier
from ecr.rl.rewards import ExplanationReward

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo" / "erv.yaml"


def test_label_then_fit_demo_config_exports_verifier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    request.addfinalizer(lambda n=torch.get_num_threads(): torch.set_num_threads(n))
    torch.set_num_threads(1)  # two contending threads on a shared 2-core machine are several times slower
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["ecr"])  # LightningCLI also looks at sys.argv
    rng = np.random.default_rng(0)
    n = len(DFEW_LABELS)
    rows = [
        {"label": lbl, "explanation": compose_explanation(profile_for(lbl, i % n, n), rng), "split": "train"}
        for i, lbl in enumerate(list(DFEW_LABELS) * 8)
    ]
    Path("manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit) as code:
        main(["label", "--input", "manifest.jsonl", "--output", "demo_data/erv/sentences.jsonl", "--labels", "dfew"])
    assert code.value.code == 0

    cli = cli_main(["fit", "--config", str(CONFIG), "--trainer.max_epochs", "2", "--trainer.enable_progress_bar",
                    "false", "--data.init_args.batch_size", "32"])  # fmt: skip
    log_dir = Path(cli.trainer.log_dir)
    assert list(log_dir.glob("events.out.tfevents.*")), "no TensorBoard event file"
    hparams = yaml.safe_load((log_dir / "hparams.yaml").read_text())
    assert hparams["student"] == "minilm" and hparams["labels"] == "dfew"  # module + datamodule hparams
    assert cli.trainer.checkpoint_callback.best_model_path
    assert "val/macro_f1" in cli.trainer.callback_metrics

    folder = tmp_path / "runs" / "demo_erv" / "verifier"
    meta = json.loads((folder / "erv.json").read_text())
    best = torch.load(cli.trainer.checkpoint_callback.best_model_path, map_location="cpu", weights_only=False)
    assert meta["threshold"] == pytest.approx(float(best["state_dict"]["threshold"]), abs=1e-6)
    assert best["hyper_parameters"]["label_space"] == list(DFEW_LABELS)  # rebuildable without the DataModule
    assert meta["exported_from"] == cli.trainer.checkpoint_callback.best_model_path
    assert meta["mapping"] == {lbl: lbl for lbl in DFEW_LABELS} and meta["label_names"] == list(DFEW_LABELS)

    verifier = load_verifier(folder)
    sentences = ["The corners of the mouth turn down in a clear frown.", "Overall the person seems happy.", "Hi."]
    torch.testing.assert_close(verifier.probs(sentences), cli.model.verifier.probs(sentences))
    reward = ExplanationReward(verifier, "dfew")
    assert reward.threshold == pytest.approx(meta["threshold"])
    scores = reward(["<think>Overall the person seems happy.</think><answer>happy</answer>"], ["happy"])
    assert 0.0 <= scores[0] <= 1.0
