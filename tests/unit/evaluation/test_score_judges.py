"""`ecr score` with two judges (per-judge metrics, raw agreement, Cohen's κ) and with compound (multi-label) truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from jsonargparse import CLI

from ecr.cli import configure_parsing
from ecr.errors import ConfigError, ManifestError
from ecr.evaluation.predictions import read_predictions
from ecr.evaluation.score import score_command
from ecr.labels import DFEW, MAFW
from ecr.metrics.compound import CompoundAccuracy, compound_hits, label_mask
from ecr.metrics.explanation import sentence_labels
from ecr.rl.rewards import ExplanationReward

from .conftest import KEY, JudgeServer
from .fakes import KeywordVerifier, completion, write_predictions

ENV = "ECR_TEST_JUDGE_KEY"
IDENTITY = {lbl: lbl for lbl in DFEW.labels}


def judged_rows() -> list[dict]:
    """Six clips, the ERV's stored sentence labels beside each; the fake LLM judge names the first emotion word."""
    spec = [  # truth = prediction; (think, verifier's ê, LLM's ê)
        ("happy", "She is happy."),  # happy / happy
        ("sad", "He is sad."),  # sad / sad
        ("sad", "She is happy. Sad eyes. Sad voice."),  # sad (2 votes to 1) / happy (first word): disagree
        ("angry", "He is angry."),  # angry / angry
        ("happy", None),  # no think: both MISSING
        ("fear", "OFFLIST she is fearful."),  # fear / MISSING (off-list reply)
    ]
    reward = ExplanationReward(KeywordVerifier(), DFEW)
    texts = [completion(think, truth) for truth, think in spec]
    verifier = {"path": "kw", "threshold": 0.5, "mapping": IDENTITY}
    return [
        {"id": f"c{i}", "label": truth, "completion": text, "sentences": sents, "verifier": verifier}
        for i, ((truth, _), text, sents) in enumerate(zip(spec, texts, sentence_labels(reward, texts), strict=True))
    ]


def test_two_judges_give_each_judges_metrics_and_their_agreement(
    judge_server: JudgeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ENV, KEY)
    path = write_predictions(tmp_path / "pred.jsonl", judged_rows())
    configure_parsing()
    args = [
        "--predictions", str(path), "--labels", "dfew", "--judge", "verifier", "--judge+", "openai",
        "--openai.model", "judge-model", "--openai.base_url", judge_server.url, "--openai.api_key_env", ENV,
        "--openai.max_retries", "0", "--bootstrap", "50", "--out", str(tmp_path / "m.json"),
    ]  # fmt: skip
    assert CLI(score_command, args=args, prog="ecr score", as_positional=False) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert set(m["judges"]) == {"verifier", "openai"}
    v, o = m["judges"]["verifier"], m["judges"]["openai"]
    assert (v["judged"], v["missing"], v["epc"]) == (5, 1, 1.0)
    assert (o["judged"], o["missing"], o["epc"]) == (4, 2, pytest.approx(3 / 4))
    assert o["missing_reasons"] == {"no_think": 1, "off_list": 1} and o["judge"]["model"] == "judge-model"
    assert o["explanations"]["c2"] == "happy" and v["explanations"]["c2"] == "sad"
    # the headline explanation metrics are the first judge's
    assert (m["epc"], m["judged"], m["judge"]["judge"]) == (1.0, 5, "verifier")
    agreement = m["agreement"]["verifier/openai"]
    assert (agreement["n"], agreement["excluded"]) == (4, 2)  # c4 (both missing) and c5 (the LLM's missing)
    assert agreement["agreement"] == pytest.approx(3 / 4)
    # marginals: verifier happy .25 sad .5 angry .25; LLM happy .5 sad .25 angry .25 -> p_e = 5/16
    assert agreement["kappa"] == pytest.approx((3 / 4 - 5 / 16) / (1 - 5 / 16))
    assert set(m["intervals"]) >= {"epc", "eea", "fcr"}  # intervals: first judge
    out = capsys.readouterr().out
    assert "| EPC (openai) | 75.00 |" in out and "judges verifier/openai: raw agreement 75.00 %" in out
    assert len(judge_server.reasons) == 5  # one call per clip with a think block, none for c4


def test_one_judge_keeps_the_old_layout_and_bad_judge_lists_fail(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "pred.jsonl", judged_rows())
    assert score_command(path, "dfew", out=tmp_path / "m.json", judge="verifier", bootstrap=0) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert "judges" not in m and "agreement" not in m and m["epc"] == 1.0
    assert score_command(path, "dfew", out=tmp_path / "l.json", judge=["verifier"], bootstrap=0) == 0
    assert json.loads((tmp_path / "l.json").read_text())["epc"] == 1.0
    with pytest.raises(ConfigError, match="given once"):
        score_command(path, "dfew", out=tmp_path / "x.json", judge=["verifier", "verifier"])
    with pytest.raises(ConfigError, match="none alone"):
        score_command(path, "dfew", out=tmp_path / "x.json", judge=["none", "verifier"])


# ------------------------------------------------------------------------------------------ compound truth


def compound_rows() -> list[dict]:
    return [
        {"id": "a", "label": "happiness", "labels": ["happiness", "surprise"], "prediction": "surprise"},  # hit
        {"id": "b", "label": "sadness", "labels": ["sad", "fear"], "prediction": "fear"},  # synonyms: hit
        {"id": "c", "label": "anger", "labels": ["anger", "disgust"], "prediction": None},  # unparseable: miss
        {"id": "d", "label": "anger", "labels": ["anger", "contempt"], "prediction": "happiness"},  # miss
        {"id": "e", "label": "neutral", "prediction": "neutral"},  # single-label clip: not compound
    ]


def test_compound_accuracy_is_reported_apart_from_war_uar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_predictions(tmp_path / "pred.jsonl", compound_rows())
    assert score_command(path, "mafw", out=tmp_path / "m.json", judge="none", bootstrap=0) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["war"] == pytest.approx(1 / 5)  # single-label: only e is right
    assert m["compound"]["accuracy"] == pytest.approx(2 / 4)
    assert (m["compound"]["n"], m["compound"]["correct"]) == (4, 2)
    assert "| compound | 50.00 |" in capsys.readouterr().out
    assert read_predictions(path, MAFW)[1].labels == ("sadness", "fear")
    write_predictions(tmp_path / "single.jsonl", [compound_rows()[4]])
    assert score_command(tmp_path / "single.jsonl", "mafw", out=tmp_path / "s.json", judge="none") == 0
    assert "compound" not in json.loads((tmp_path / "s.json").read_text())


@pytest.mark.parametrize(
    ("labels", "message"),
    [("happiness", "non-empty list"), ([], "non-empty list"), (["bored"], "'bored' is not a label")],
)
def test_bad_compound_labels_name_the_line(tmp_path: Path, labels: object, message: str) -> None:
    rows = [compound_rows()[4], {"id": "x", "label": "anger", "labels": labels, "prediction": None}]
    path = write_predictions(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ManifestError, match=f"bad.jsonl:2: .*{message}"):
        read_predictions(path, MAFW)


def test_compound_maths_and_metric() -> None:
    truth = label_mask([["happy", "sad"], ["fear"], ["angry", "disgust"]], DFEW.labels)  # [3, 7]
    assert truth.sum(dim=1).tolist() == [2, 1, 2]
    pred = [DFEW.labels.index("sad"), -1, DFEW.labels.index("happy")]
    assert compound_hits(torch.tensor(pred), truth).tolist() == [True, False, False]
    metric = CompoundAccuracy()
    metric.update(torch.tensor(pred[:2]), truth[:2])
    metric.update(torch.tensor(pred[2:]), truth[2:])
    assert metric.report()["accuracy"] == pytest.approx(1 / 3) and metric.report()["n"] == 3
    assert CompoundAccuracy().report()["accuracy"] is None  # no compound clip: undefined, not 0
    with pytest.raises(ValueError, match="not in the label set"):
        label_mask([["bored"]], DFEW.labels)


def test_cue_judge_through_score_with_the_verifiers_sentence_f1(tmp_path: Path) -> None:
    """`ecr score --judge [cue, verifier] --cue_table T`: the cue judge's metrics first, and the verifier's
    per-sentence labels scored against the generator's table (per-class F1)."""
    from ecr.fixtures.synth import cue_table

    table = tmp_path / "cue_table.json"
    table.write_text(json.dumps({"labels": list(DFEW.labels), "sentences": cue_table("dfew")}))
    sad_voice = "The voice is low and falls slowly, sounding sad."  # the keyword verifier reads: sad
    grin = "The corners of the lips are lifted and the cheeks look raised in a grin."  # keyword verifier: neutral
    filler = "The camera does not move during the short video."  # keyword verifier: neutral
    spec = [  # (truth, prediction, think)
        ("happy", "happy", f"{grin} {sad_voice} Overall the person seems happy."),  # cue: happy
        ("happy", "happy", f"{sad_voice} {filler} Overall the person seems sad."),  # cue: sad
        ("sad", "sad", f"{sad_voice} Overall the person seems sad."),  # cue: sad
    ]
    reward = ExplanationReward(KeywordVerifier(), DFEW)
    texts = [completion(think, pred) for _, pred, think in spec]
    verifier = {"path": "kw", "threshold": 0.5, "mapping": IDENTITY}
    rows = [
        {"id": f"c{i}", "label": truth, "completion": text, "sentences": sents, "verifier": verifier}
        for i, ((truth, _, _), text, sents) in enumerate(zip(spec, texts, sentence_labels(reward, texts), strict=True))
    ]
    path = write_predictions(tmp_path / "pred.jsonl", rows)
    configure_parsing()
    args = ["--predictions", str(path), "--labels", "dfew", "--judge", "cue", "--judge+", "verifier",
            "--cue_table", str(table), "--bootstrap", "0", "--out", str(tmp_path / "m.json")]  # fmt: skip
    assert CLI(score_command, args=args, prog="ecr score", as_positional=False) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["judge"]["judge"] == "cue"
    assert m["judges"]["cue"]["explanations"] == {"c0": "happy", "c1": "sad", "c2": "sad"}
    assert m["epc"] == pytest.approx(2 / 3) and m["fcr"] == pytest.approx(2 / 3)
    f1 = m["verifier_vs_cue"]
    # 8 known sentences: happy truth x2 (grin, "seems happy": the keyword verifier reads "happy" in the second
    # only), sad truth x5 (all read sad), neutral truth x1 (the filler, read neutral); grin read neutral.
    assert f1["sentences"] == 8
    assert f1["per_class"]["happy"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert f1["per_class"]["sad"]["f1"] == 1.0 and f1["per_class"]["sad"]["support"] == 5
    assert f1["per_class"]["neutral"]["precision"] == 0.5 and f1["per_class"]["neutral"]["recall"] == 1.0
    with pytest.raises(ConfigError, match="needs --cue_table"):
        score_command(path, "dfew", judge="cue", out=tmp_path / "x.json", bootstrap=0)
