"""`score_command` / `ecr score`: metrics.json from a predictions file, and bad input naming the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonargparse import CLI

from ecr.cli import configure_parsing
from ecr.errors import ManifestError
from ecr.evaluation.predictions import read_predictions
from ecr.evaluation.score import score_command, score_predictions
from ecr.labels import DFEW
from ecr.metrics.explanation import explanation_label

from .fakes import KeywordVerifier, completion, write_predictions

IDENTITY = {lbl: lbl for lbl in DFEW.labels}


def rows() -> list[dict]:
    """Six clips with known answers: (truth, completion)."""
    spec = [
        ("happy", "She is happy. A happy voice.", "happy"),  # right / right
        ("happy", "She is sad. Sad eyes.", "happy"),  # right / wrong
        ("sad", "He is sad.", "happy"),  # wrong / right
        ("sad", None, "sad"),  # no think: judge MISSING
        ("angry", "He is angry.", "furious"),  # synonym -> angry: right / right
        ("fear", "She is happy.", "jealous"),  # off-list answer: unparseable / wrong
    ]
    out = []
    for i, (truth, think, answer) in enumerate(spec):
        text = completion(think, answer)
        out.append({"id": f"c{i}", "label": truth, "completion": text})
    return out


def _with_stored_sentences(raw: list[dict]) -> list[dict]:
    from ecr.metrics.explanation import sentence_labels
    from ecr.rl.rewards import ExplanationReward

    reward = ExplanationReward(KeywordVerifier(), DFEW)
    per = sentence_labels(reward, [r["completion"] for r in raw])
    verifier = {"path": "kw", "threshold": 0.5, "mapping": IDENTITY}
    return [{**r, "sentences": s, "verifier": verifier} for r, s in zip(raw, per, strict=True)]


def test_score_from_stored_sentences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_predictions(tmp_path / "pred.jsonl", _with_stored_sentences(rows()))
    assert score_command(path, "dfew", out=tmp_path / "m.json") == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["war"] == pytest.approx(4 / 6) and 0 <= m["uar"] <= 1  # c0, c1, c3, c4
    # happy 2/2, sad 1/2, angry 1/1, fear 0/1 -> UAR over the 4 classes present
    assert m["uar"] == pytest.approx((1 + 0.5 + 1 + 0) / 4) and m["uar_classes"] == ["happy", "sad", "angry", "fear"]
    assert m["unparseable"] == 1 and m["per_class_recall"]["surprise"] is None
    assert m["judged"] == 5 and m["missing"] == 1 and m["missing_reasons"] == {"no_think": 1}
    assert m["epc"] == pytest.approx(2 / 5)  # c0, c4 (c5's unparseable prediction disagrees with its ê)
    assert m["eea"] == pytest.approx(3 / 5)  # c0, c2, c4
    assert m["fcr"] == pytest.approx(2 / 5)  # c0, c4
    assert m["quadrants"] == {
        "prediction_right/explanation_right": 2,
        "prediction_right/explanation_wrong": 1,
        "prediction_wrong/explanation_right": 1,
        "prediction_wrong/explanation_wrong": 1,
    }
    assert m["explanations"]["c3"] is None and m["explanations"]["c1"] == "sad"
    assert m["confusion"]["columns"][-1] == "(no label)" and m["confusion"]["matrix"][6][-1] == 1
    out = capsys.readouterr().out
    assert "| WAR | 66.67 |" in out and "explanation right" in out


def test_score_with_a_verifier_model_equals_stored_sentences(tmp_path: Path) -> None:
    from ecr.evaluation.judges import VerifierJudge

    preds = read_predictions(write_predictions(tmp_path / "p.jsonl", _with_stored_sentences(rows())), DFEW)
    a = score_predictions(preds, DFEW, VerifierJudge(KeywordVerifier(), DFEW))
    from ecr.evaluation.judges import StoredVerifierJudge

    b = score_predictions(preds, DFEW, StoredVerifierJudge(DFEW))
    for key in ("war", "uar", "epc", "eea", "fcr", "missing", "quadrants", "explanations"):
        assert a[key] == b[key], key


def test_score_through_jsonargparse_like_ecr_score(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "pred.jsonl", rows())
    configure_parsing()
    args = ["--predictions", str(path), "--labels", "dfew", "--judge", "none"]
    assert CLI(score_command, args=args, prog="ecr score", as_positional=False) == 0
    m = json.loads((tmp_path / "pred.jsonl.metrics.json").read_text())
    assert m["war"] == pytest.approx(4 / 6) and m["judge"] is None and "epc" not in m


def _bad(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(ManifestError) as err:
        read_predictions(path, DFEW)
    return str(err.value)


def test_bad_predictions_name_the_line(tmp_path: Path) -> None:
    good = json.dumps({"id": "a", "label": "happy", "prediction": "happy", "think": "x"})
    assert _bad(tmp_path, good + "\n{not json\n").endswith(
        "bad.jsonl:2: invalid JSON (Expecting property name enclosed in double quotes)"
    )
    msg = _bad(tmp_path, good + "\n" + json.dumps({"id": "b", "label": "bored", "prediction": None}) + "\n")
    assert "bad.jsonl:2: label 'bored' is not a label of 'dfew'" in msg
    msg = _bad(tmp_path, good + "\n" + json.dumps({"id": "b", "label": "sad", "prediction": "bored"}) + "\n")
    assert "bad.jsonl:2: prediction 'bored'" in msg
    msg = _bad(tmp_path, good + "\n\n" + good + "\n")
    assert "bad.jsonl:3: duplicate id 'a' (first at line 1)" in msg
    assert "bad.jsonl:1: field 'id'" in _bad(tmp_path, json.dumps({"label": "sad", "prediction": None}) + "\n")
    assert "bad.jsonl:1: neither" in _bad(tmp_path, json.dumps({"id": "x", "label": "sad"}) + "\n")


def test_a_missing_file_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="predictions file does not exist"):
        read_predictions(tmp_path / "nope.jsonl", DFEW)


def test_prediction_is_rederived_from_the_completion_when_absent(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.jsonl", rows())
    preds = read_predictions(path, DFEW)
    assert [p.prediction for p in preds] == ["happy", "happy", "happy", "sad", "angry", None]
    assert preds[3].think is None and preds[0].think == "She is happy. A happy voice."
    assert explanation_label(None, IDENTITY, DFEW.labels).reason == "no_think"  # type: ignore[union-attr]


# ------------------------------------------------------------------------ intervals and paired comparison


def test_score_writes_bootstrap_intervals_for_every_headline_metric(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_predictions(tmp_path / "pred.jsonl", _with_stored_sentences(rows()))
    assert score_command(path, "dfew", out=tmp_path / "m.json", bootstrap=300, seed=5) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    iv = m["intervals"]
    assert (iv["n_resamples"], iv["confidence"], iv["seed"]) == (300, 0.95, 5)
    for key in ("war", "uar", "epc", "eea", "fcr"):
        lo, hi = iv[key]
        assert 0 <= lo <= m[key] <= hi <= 1, key
    assert "| WAR | 66.67 | [" in capsys.readouterr().out  # the interval column
    assert score_command(path, "dfew", out=tmp_path / "m2.json", bootstrap=300, seed=5) == 0
    assert json.loads((tmp_path / "m2.json").read_text())["intervals"] == iv  # same seed, same intervals
    assert score_command(path, "dfew", out=tmp_path / "m0.json", bootstrap=0) == 0
    m0 = json.loads((tmp_path / "m0.json").read_text())
    assert "intervals" not in m0 and "comparison" not in m0
    assert {k: m0[k] for k in ("war", "uar", "epc", "quadrants")} == {
        k: m[k] for k in ("war", "uar", "epc", "quadrants")
    }


def test_compare_through_jsonargparse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _with_stored_sentences(rows())
    a = write_predictions(tmp_path / "a.jsonl", raw)
    # b: same clips in another order, c2 now right (sad) -> WAR 5/6; c1's explanation unchanged
    fixed = [{**r, "completion": completion("He is sad.", "sad")} if r["id"] == "c2" else r for r in raw]
    b = write_predictions(tmp_path / "b.jsonl", list(reversed(fixed)))
    configure_parsing()
    args = ["--predictions", str(a), "--labels", "dfew", "--bootstrap", "200", "--seed", "1", "--compare", str(b)]
    assert (
        CLI(score_command, args=[*args, "--out", str(tmp_path / "m.json")], prog="ecr score", as_positional=False) == 0
    )
    cmp = json.loads((tmp_path / "m.json").read_text())["comparison"]
    assert cmp["predictions"] == str(b) and cmp["n"] == 6 and cmp["n_resamples"] == 200 and cmp["seed"] == 1
    war = cmp["metrics"]["war"]
    assert (
        war["a"] == pytest.approx(4 / 6) and war["b"] == pytest.approx(5 / 6) and war["delta"] == pytest.approx(1 / 6)
    )
    assert war["interval"][0] <= war["delta"] <= war["interval"][1] and 0 < war["p_value"] <= 1
    assert cmp["mcnemar"] == {"a_only": 0, "b_only": 1, "discordant": 1, "p_value": 1.0}
    assert set(cmp["metrics"]) == {"war", "uar", "epc", "eea", "fcr"}
    assert cmp["metrics"]["eea"]["delta"] == pytest.approx(0.0)  # same explanations
    assert "exact McNemar" in capsys.readouterr().out

    same = ["--predictions", str(a), "--labels", "dfew", "--judge", "none", "--compare", str(a)]
    assert (
        CLI(score_command, args=[*same, "--out", str(tmp_path / "s.json")], prog="ecr score", as_positional=False) == 0
    )
    cmp = json.loads((tmp_path / "s.json").read_text())["comparison"]
    assert set(cmp["metrics"]) == {"war", "uar"}
    for entry in cmp["metrics"].values():
        assert entry["delta"] == 0.0 and entry["p_value"] == 1.0 and entry["interval"] == [0.0, 0.0]


def test_compare_with_other_clips_is_a_config_error(tmp_path: Path) -> None:
    from ecr.errors import ConfigError

    a = write_predictions(tmp_path / "a.jsonl", rows())
    b = write_predictions(tmp_path / "b.jsonl", rows()[:5])
    with pytest.raises(ConfigError, match=r"compare: .*1 only in the first \(e.g. \['c5'\]\), 0 only in the second"):
        score_command(a, "dfew", out=tmp_path / "m.json", judge="none", compare=b)
    with pytest.raises(ConfigError, match="bootstrap"):
        score_command(a, "dfew", out=tmp_path / "m.json", judge="none", bootstrap=-1)


def test_ecr_test_and_ecr_score_assemble_the_same_metrics(tmp_path: Path) -> None:
    """`ecr test`'s batch-by-batch `ClipMetrics` gives `score_predictions`' numbers (one assembly, two jobs)."""
    from ecr.evaluation.judges import StoredVerifierJudge
    from ecr.metrics.assembly import ClipMetrics
    from ecr.metrics.recognition import class_ids

    raw = _with_stored_sentences(rows())
    raw[2]["labels"] = ["sad", "happy"]  # a compound clip
    preds = read_predictions(write_predictions(tmp_path / "p.jsonl", raw), DFEW)
    scored = score_predictions(preds, DFEW, StoredVerifierJudge(DFEW))
    labels = DFEW.labels
    assembled = ClipMetrics(labels, judged=True)
    for batch in (preds[:4], preds[4:]):  # as `test_step` sees the clips
        judged = [explanation_label(p.sentences if p.think is not None else None, IDENTITY, labels) for p in batch]
        assembled.update(
            class_ids([p.prediction for p in batch], labels),
            class_ids([p.label for p in batch], labels),
            class_ids([j if isinstance(j, str) else None for j in judged], labels),
            [p.labels for p in batch],
        )
    tested = assembled.report({"judge": "verifier"})
    assert tested["compound"]["n"] == 1 and tested["judged"] == 5
    for key in ("war", "uar", "confusion", "per_class_recall", "epc", "eea", "fcr", "missing", "quadrants", "compound"):
        assert tested[key] == scored[key], key
