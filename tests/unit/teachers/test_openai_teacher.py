"""The chat teacher against a real local chat-completions server: faults, retries, cache, resume, secrets."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecr.errors import ConfigError, TeacherError
from ecr.labels import LabelSet
from ecr.teachers.base import Missing, TeacherLabel
from ecr.teachers.label import label_command
from ecr.teachers.openai_chat import OpenAIConfig, OpenAITeacher, parse_label_reply

from .conftest import KEY, ChatServer

ENV = "ECR_TEST_TEACHER_KEY"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, KEY)


def config(server: ChatServer, **kw: object) -> OpenAIConfig:
    base = {"model": "test-model", "base_url": server.url, "api_key_env": ENV, "timeout": 0.5,
            "max_retries": 3, "backoff": 0.01, "backoff_max": 0.05, "concurrency": 4}  # fmt: skip
    return OpenAIConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_parse_label_reply_is_strict() -> None:
    space = LabelSet("s", ("happy", "sad", "neutral", "angry"))
    assert parse_label_reply('{"labels": ["Happiness", "anger"]}', space) == TeacherLabel(("happy", "angry"))
    assert parse_label_reply('```json\n{"labels": ["sad"]}\n```', space) == TeacherLabel(("sad",))
    assert parse_label_reply('{"labels": ["neutral", "sad"]}', space) == TeacherLabel(("sad",))
    assert parse_label_reply("happy", space).reason == "unparseable"  # type: ignore[union-attr]
    assert parse_label_reply('{"labels": []}', space).reason == "unparseable"  # type: ignore[union-attr]
    assert parse_label_reply('{"labels": ["a", "b", "c"]}', space).reason == "too_many_labels"  # type: ignore[union-attr]
    assert parse_label_reply('{"labels": ["jealous"]}', space).reason == "off_list"  # type: ignore[union-attr]


def test_faults_retries_and_missing(chat_server: ChatServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the openai/httpx debug logs must not leak the key either
    texts = [
        "She looks happy.", "FAIL500x2 he is sad.", "RATE429x2 angry shouting.", "SLOWx1 a fear of dogs.",
        "ALWAYS500 happy", "GARBAGE text", "OFFLIST text", "BROKENBODY text", "PAIR happy and sad",
    ]  # fmt: skip
    teacher = OpenAITeacher("dfew", config=config(chat_server), cache_path=tmp_path / "cache.jsonl")
    results = teacher.label(texts)
    assert results[0] == TeacherLabel(("happy",))
    assert results[1] == TeacherLabel(("sad",))  # after two 500s
    assert results[2] == TeacherLabel(("angry",))  # after two 429s
    assert results[3] == TeacherLabel(("fear",))  # after one timeout
    assert results[8] == TeacherLabel(("happy", "sad"))
    reasons = {i: r.reason for i, r in enumerate(results) if isinstance(r, Missing)}
    assert reasons == {4: "retries_exhausted", 5: "unparseable", 6: "off_list", 7: "malformed_response"}
    assert chat_server.attempts["ALWAYS500 happy"] == 4  # 1 + max_retries
    assert teacher.counts["retries"] == 2 + 2 + 1 + 3
    assert all(auth == f"Bearer {KEY}" for _, auth in chat_server.requests)
    assert 2 <= chat_server.max_in_flight <= 4  # concurrent, and bounded by `concurrency`
    # every real reply (also unparseable ones) is cached, an HTTP-200 unusable body as a failure; transport
    # failures are not
    cached = [json.loads(x) for x in (tmp_path / "cache.jsonl").read_text().splitlines()]
    assert sorted(r["text"] for r in cached if "failure" not in r) == sorted(texts[i] for i in (0, 1, 2, 3, 5, 6, 8))
    assert [(r["text"], r["failure"]) for r in cached if "failure" in r] == [(texts[7], "malformed_response")]
    # a second teacher on the same cache sends requests only for uncached texts
    before = len(chat_server.requests)
    again = OpenAITeacher("dfew", config=config(chat_server, max_retries=0), cache_path=tmp_path / "cache.jsonl")
    assert again.label(texts[:4]) == results[:4]
    assert len(chat_server.requests) == before and again.counts["cache_hits"] == 4
    # changed settings (another model) never reuse those answers
    other = OpenAITeacher("dfew", config=config(chat_server, model="other"), cache_path=tmp_path / "cache.jsonl")
    other.label(texts[:1])
    assert len(chat_server.requests) == before + 1
    assert KEY not in caplog.text
    assert KEY not in (tmp_path / "cache.jsonl").read_text()


def test_auth_error_aborts_and_missing_key_is_config_error(chat_server: ChatServer, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    teacher = OpenAITeacher(
        "dfew", config=config(chat_server, model="forbidden-model"), cache_path=tmp_path / "c.jsonl"
    )
    with pytest.raises(TeacherError) as info:
        teacher.label(["happy"])
    assert KEY not in str(info.value) and "401" in str(info.value)
    monkeypatch.delenv(ENV)
    with pytest.raises(ConfigError, match=ENV):
        OpenAITeacher("dfew", config=config(chat_server), cache_path=tmp_path / "c.jsonl").label(["x"])


def test_label_command_with_openai_and_paraphrase_free_summary(chat_server: ChatServer, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    src = tmp_path / "preds.jsonl"
    rows = [{"completion": "<think>She looks happy. GARBAGE now.</think><answer>happy</answer>"},
            {"completion": "<answer>sad</answer>"}, {"completion": "<think>He is sad! He cries.</think>"}]  # fmt: skip
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "erv" / "sentences.jsonl"
    code = label_command(src, out, teacher="openai", labels="dfew", openai=config(chat_server))
    assert code == 0
    written = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["text"], r["labels"]) for r in written] == [
        ("She looks happy.", ["happy"]), ("He is sad!", ["sad"]), ("He cries.", ["neutral"])]  # fmt: skip
    assert all(r["source"] == "openai:test-model" for r in written)
    summary = json.loads((tmp_path / "erv" / "sentences.jsonl.summary.json").read_text())
    assert summary["missing"] == {"unparseable": 1} and summary["rows_skipped"] == {"no_think": 1}
    printed = capsys.readouterr().out
    assert "missing 1" in printed
    for path in (
        out,
        tmp_path / "erv" / "sentences.jsonl.summary.json",
        tmp_path / "erv" / "sentences.jsonl.cache.jsonl",
    ):
        assert KEY not in path.read_text()
    assert KEY not in printed


SCRIPT = """
import sys
from pathlib import Path
from ecr.teachers.label import label_command
from ecr.teachers.openai_chat import OpenAIConfig
cfg = OpenAIConfig(model="test-model", base_url=sys.argv[1], api_key_env="{env}", timeout=5, max_retries=0,
                   concurrency=2)
sys.exit(label_command(Path(sys.argv[2]), Path(sys.argv[3]), teacher="openai", split_sentences=False, openai=cfg))
"""


def test_resume_after_kill_pays_nothing_twice(chat_server: ChatServer, tmp_path: Path) -> None:
    texts = [f"Sentence number {i} is {['happy', 'sad', 'calm'][i % 3]}." for i in range(40)]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out, cache = tmp_path / "out.jsonl", tmp_path / "out.jsonl.cache.jsonl"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(env=ENV))
    env = {**os.environ, ENV: KEY}
    cmd = [sys.executable, str(script), chat_server.url, str(src), str(out)]
    chat_server.delay = 0.1
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline and (not cache.exists() or len(cache.read_text().splitlines()) < 10):
        time.sleep(0.02)
    proc.kill()
    proc.wait(10)
    assert not out.exists()  # killed before the end
    cached_texts = {json.loads(x)["text"] for x in cache.read_text().splitlines() if x.strip().endswith("}")}
    assert 10 <= len(cached_texts) < 40
    chat_server.delay = 0.0
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    counts = chat_server.texts()
    assert all(counts[t] == 1 for t in cached_texts)  # nothing cached was asked again
    assert set(counts) == set(texts)
    assert sum(counts.values()) <= len(texts) + 2  # at most the in-flight requests were lost
    labelled = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["text"] for r in labelled) == sorted(texts)
    assert KEY not in done.stdout + done.stderr


def test_paraphrase_balancing_with_llm_teacher(chat_server: ChatServer, tmp_path: Path) -> None:
    texts = [f"Person {i} is happy." for i in range(8)] + ["He is sad.", "She looks sad today."]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t, "split": "train"}) + "\n" for t in texts))
    out = tmp_path / "out.jsonl"
    code = label_command(src, out, teacher="openai", split_sentences=False, balance="paraphrase",
                         balance_ratio=1.0, openai=config(chat_server))  # fmt: skip
    assert code == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    sad = [r for r in rows if r["labels"] == ["sad"]]
    assert len(sad) == 8  # 2 originals + 6 paraphrases (3 per source)
    para = [r for r in sad if r.get("augmented")]
    assert len(para) == 6 and all("(variant" in r["text"] and r["source"].endswith("+paraphrase") for r in para)
    originals = {r["text"]: r["group"] for r in sad if not r.get("augmented")}
    assert {r["group"] for r in para} == set(originals.values())  # paraphrases stay in their source's split group
    summary = json.loads((tmp_path / "out.jsonl.summary.json").read_text())
    assert summary["distribution_after_balance"] == {"happy": 8, "sad": 8} and summary["augmented"] == 6


def test_an_unusable_billed_reply_is_cached_as_a_counted_failure(chat_server: ChatServer, tmp_path: Path) -> None:
    """HTTP 200 with a broken body: asked once, then reported from the cache on reruns (not paid again) until
    `retry_failures` asks again."""
    cache = tmp_path / "c.jsonl"
    first = OpenAITeacher("dfew", config=config(chat_server, max_retries=0), cache_path=cache)
    assert first.label(["BROKENBODY x"])[0].reason == "malformed_response"  # type: ignore[union-attr]
    again = OpenAITeacher("dfew", config=config(chat_server, max_retries=0), cache_path=cache)
    result = again.label(["BROKENBODY x"])[0]
    assert result.reason == "malformed_response" and "cached" in result.detail  # type: ignore[union-attr]
    assert chat_server.attempts["BROKENBODY x"] == 1 and again.counts["cached_failures"] == 1
    retry = OpenAITeacher("dfew", config=config(chat_server, max_retries=0, retry_failures=True), cache_path=cache)
    retry.label(["BROKENBODY x"])
    assert chat_server.attempts["BROKENBODY x"] == 2


LOCK_HOLDER = """
import sys, time
from ecr.teachers.cache import AnswerCache
AnswerCache(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def test_two_runs_on_one_cache_cannot_both_pay(tmp_path: Path) -> None:
    from ecr.teachers.cache import AnswerCache

    cache = tmp_path / "out.jsonl.cache.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(cache)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(TeacherError, match=r"in use by pid \d+"):
            AnswerCache(cache)
    finally:
        holder.kill()
        holder.wait(10)
    AnswerCache(cache)  # the kernel released the killed holder's lock
    AnswerCache(cache)  # and the same process may open it again
