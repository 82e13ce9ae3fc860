"""The verifier judge (with a model and from stored sentences) and the LLM judge against a local chat server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecr.errors import ConfigError, TeacherError
from ecr.evaluation.judges import JUDGE_PROMPT, LLMJudge, StoredVerifierJudge, VerifierJudge
from ecr.evaluation.predictions import Prediction
from ecr.labels import DFEW
from ecr.teachers.base import Missing
from ecr.teachers.openai_chat import OpenAIConfig

from .conftest import KEY, JudgeServer
from .fakes import KeywordVerifier

ENV = "ECR_TEST_JUDGE_KEY"


def pred(think: str | None, label: str = "happy", **kw) -> Prediction:
    return Prediction(id=kw.pop("id", "c"), label=label, prediction=kw.pop("prediction", label), think=think, **kw)


def test_verifier_judge_applies_the_rule_with_one_batched_call() -> None:
    verifier = KeywordVerifier()
    judge = VerifierJudge(verifier, DFEW)
    preds = [
        pred("She looks happy. Her voice is happy. A sad tone once."),
        pred("The room is grey. Nothing moves."),  # all neutral
        pred(None),  # no think block
        pred(""),  # a think block without sentences
        pred("Calm face. She is angry."),
    ]
    assert judge.judge(preds) == ["happy", "neutral", Missing("no_think"), Missing("no_sentences"), "angry"]
    assert verifier.calls == 1
    settings = judge.settings()
    assert settings["threshold"] == 0.5 and settings["mapping"]["happy"] == "happy"


def test_stored_sentences_judge_and_its_error() -> None:
    stored = {"mapping": {lbl: lbl for lbl in DFEW.labels}, "threshold": 0.5, "path": "v"}
    sents = [{"text": "a", "labels": {"sad": 0.8}}, {"text": "b", "labels": {"neutral": 0.9}}]
    judge = StoredVerifierJudge(DFEW)
    assert judge.judge([pred("a. b.", sentences=sents, verifier=stored), pred(None, verifier=stored)]) == [
        "sad",
        Missing("no_think"),
    ]
    assert judge.settings()["threshold"] == 0.5
    with pytest.raises(ConfigError, match="--verifier"):
        StoredVerifierJudge(DFEW).judge([pred("a.")])


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, KEY)


def config(server: JudgeServer, **kw: object) -> OpenAIConfig:
    base = {"model": "judge-model", "base_url": server.url, "api_key_env": ENV, "timeout": 2.0,
            "max_retries": 2, "backoff": 0.01, "backoff_max": 0.02, "concurrency": 3}  # fmt: skip
    return OpenAIConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_llm_judge_prompt_faults_missing_and_cache(judge_server: JudgeServer, tmp_path: Path) -> None:
    cache = tmp_path / "judge_cache.jsonl"
    judge = LLMJudge(DFEW, config=config(judge_server), cache_path=cache)
    thinks = [
        "She is sad today.",
        "FAIL500x1 a fear of dogs.",
        "ALWAYS500 happy",
        "OFFLIST x",
        "SHOUT x",
        None,
        "Plain.",
    ]
    results = judge.judge([pred(t, id=str(i)) for i, t in enumerate(thinks)])
    assert results == [
        "sad", "fear", Missing("retries_exhausted", "InternalServerError"), Missing("off_list", "jealousy"),
        "happy", Missing("no_think"), "neutral",
    ]  # fmt: skip
    # the paper's prompt, verbatim, with the labels in id order
    expected = JUDGE_PROMPT.format(labels=", ".join(DFEW.labels), reason="She is sad today.")
    assert expected in judge_server.prompts
    assert all(roles == ["user"] for roles in judge_server.roles)  # no system message: the paper's request
    assert "in happy, sad, neutral, angry, surprise, disgust, fear. Reply with only the emotion word." in expected
    assert judge_server.attempts["ALWAYS500 happy"] == 3  # 1 + max_retries, then missing (never a label)
    assert judge.counts["missing:off_list"] == 1 and judge.counts["missing:no_think"] == 1
    # a rerun on the same cache pays for nothing already answered (the failed one is asked again)
    before = len(judge_server.reasons)
    again = LLMJudge(DFEW, config=config(judge_server, max_retries=0), cache_path=cache)
    assert again.judge([pred(t, id=str(i)) for i, t in enumerate(thinks)])[:2] == ["sad", "fear"]
    assert judge_server.reasons[before:] == ["ALWAYS500 happy"]
    assert again.usage()["cache_hits"] == 5
    assert KEY not in cache.read_text()
    # another judge model never reuses those answers
    LLMJudge(DFEW, config=config(judge_server, model="other"), cache_path=cache).judge([pred("She is sad today.")])
    assert judge_server.reasons[-1] == "She is sad today."


def test_llm_judge_resumes_after_an_abort_without_paying_twice(judge_server: JudgeServer, tmp_path: Path) -> None:
    cache = tmp_path / "judge_cache.jsonl"
    thinks = [f"Clip {i} looks {'happy' if i % 2 else 'sad'}." for i in range(8)]
    judge_server.deny_after = 5  # the key is revoked mid-run: the run aborts, what was answered is cached
    with pytest.raises(TeacherError, match="AuthenticationError"):
        LLMJudge(DFEW, config=config(judge_server, concurrency=1), cache_path=cache).judge([pred(t) for t in thinks])
    cached = [json.loads(line)["text"] for line in cache.read_text().splitlines()]
    assert len(cached) == 5
    judge_server.deny_after = None
    asked = len(judge_server.reasons)
    results = LLMJudge(DFEW, config=config(judge_server), cache_path=cache).judge([pred(t) for t in thinks])
    assert results == ["sad" if i % 2 == 0 else "happy" for i in range(8)]
    assert sorted(judge_server.reasons[asked:]) == sorted(set(thinks) - set(cached))  # only the unanswered ones


def test_llm_judge_needs_the_key(judge_server: JudgeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV)
    with pytest.raises(ConfigError, match=ENV):
        LLMJudge(DFEW, config=config(judge_server), cache_path=tmp_path / "c.jsonl").judge([pred("sad.")])


def test_cue_judge_reads_the_generators_table_and_counts_what_it_cannot(tmp_path: Path) -> None:
    from ecr.evaluation.judges import CueJudge
    from ecr.fixtures.synth import CUE_TABLE_NAME, cue_table

    table = tmp_path / CUE_TABLE_NAME
    table.write_text(json.dumps({"labels": list(DFEW.labels), "sentences": cue_table("dfew")}))
    judge = CueJudge(table, DFEW)
    smile = "The character's mouth curves upward into a broad smile."
    sad_voice = "The voice is low and falls slowly, sounding sad."
    filler = "The camera does not move during the short video."
    preds = [
        pred(f"{sad_voice} {filler} Overall the person seems sad."),  # follows the voice: sad
        pred(f"{smile} {sad_voice} Overall the person seems happy."),  # 2 happy votes vs 1 sad
        pred(f"{sad_voice} {smile}"),  # a tie: the last voting sentence decides
        pred(f"{filler} The moon is made of cheese."),  # no cue sentence; one unmatched
        pred(None),
        pred("  the VOICE is low and falls slowly,   sounding sad!"),  # case, spaces, final punctuation
        pred("The speech is low and falls slowly, sounding sad."),  # a recombination: near-matched (Jaccard 0.8)
    ]
    expected = ["sad", "happy", "happy", Missing("no_cue_sentence"), Missing("no_think"), "sad", "sad"]
    assert judge.judge(preds) == expected
    s = judge.settings()
    assert (s["judge"], s["sentences"], s["unmatched_sentences"], s["filler_sentences"]) == ("cue", 12, 1, 2)
    assert (s["near_matched_sentences"], s["unmatched_examples"]) == (1, ["The moon is made of cheese."])
    exact = CueJudge(table, DFEW, near=None)
    assert exact.judge(preds[-1:]) == [Missing("no_cue_sentence")] and exact.settings()["unmatched_sentences"] == 1
    # a sentence as close to two emotions' sentences is not guessed
    assert CueJudge(table, DFEW).lookup("Overall the person seems sad happy.")[1] == "unmatched"


def test_cue_judge_refuses_a_bad_table(tmp_path: Path) -> None:
    from ecr.evaluation.judges import CueJudge

    with pytest.raises(ConfigError, match="no cue table"):
        CueJudge(tmp_path / "missing.json", DFEW)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a cue table"):
        CueJudge(tmp_path / "bad.json", DFEW)
    (tmp_path / "other.json").write_text(json.dumps({"labels": ["calm"], "sentences": {"x": "calm"}}))
    with pytest.raises(ConfigError, match=r"\['calm'\] are not labels"):
        CueJudge(tmp_path / "other.json", DFEW)
