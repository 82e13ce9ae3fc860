"""The LLM judge of `ecr score --judge openai` against a local chat server that injects faults, killed mid-run.

The server answers the paper's judge prompt (the reason between "Reason: " and "\\nAnswer Emotion:"); markers in
a reason inject faults: FAIL500x1 (one HTTP 500, then an answer), ALWAYS500 (HTTP 500 forever: a missing answer,
never a label), OFFLIST (a 200 reply that is not a label: a counted failure), BROKENBODY (a 200 response whose
body is not JSON). `hold_at` = N makes the N-th request of a phase hang until released, so the test can
`kill -9` the `ecr score` subprocess while a request is in flight (with concurrency 1 every earlier answer has
been written to the cache by then, as the cache fsyncs a reply before it is used).

The rerun must take every answer already paid for (an HTTP 200) from the cache (0 repeated paid calls),
count the failures, and write the same metrics.json as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults import HERE, ecr_command, record_outcome, run_ecr
from support.judge_server import JudgeServer, judge_server

from ecr.fixtures.chat_server import ChatHandler, serve

KEY = "sk-judge-faults-0123456789"
ENV = "ECR_TEST_JUDGE_FAULTS_KEY"
TABLE = "LLM judge (ecr score --judge openai) vs a faulty server"


@pytest.fixture
def server() -> Iterator[JudgeServer]:
    with judge_server() as state:
        yield state


THINKS = [
    "She smiles; she looks happy.",
    "His voice is sad and low.",
    "FAIL500x1 an angry frown.",
    "ALWAYS500 a happy grin.",
    "The face shows fear.",
    "BROKENBODY he looks sad.",
    "Pure surprise on her face.",
    "OFFLIST a strange look.",
    "Disgust at the food.",
    None,  # no think block: missing without a request
    "Nothing much; a calm face.",
    "They are happy together.",
]


def _predictions(path: Path) -> Path:
    truths = [
        "happy",
        "sad",
        "angry",
        "happy",
        "fear",
        "sad",
        "surprise",
        "sad",
        "disgust",
        "neutral",
        "neutral",
        "happy",
    ]
    preds = ["happy", "sad", "angry", "sad", "fear", "sad", "happy", "sad", "disgust", "neutral", "happy", "happy"]
    rows = [
        {"id": f"c{i}", "label": t, "prediction": p, "think": think}
        for i, (t, p, think) in enumerate(zip(truths, preds, THINKS, strict=True))
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _args(server: JudgeServer, predictions: Path, out: Path) -> list[str]:
    return [
        "score", "--predictions", str(predictions), "--labels", "dfew", "--judge", "openai", "--out", str(out),
        "--bootstrap", "50", "--openai.model", "judge-model", "--openai.base_url", server.url,
        "--openai.api_key_env", ENV, "--openai.max_retries", "1", "--openai.backoff", "0.01",
        "--openai.backoff_max", "0.02", "--openai.concurrency", "1", "--openai.timeout", "10",
    ]  # fmt: skip


def _comparable(metrics: dict) -> dict:
    """metrics.json without what differs between a run and its resumption (this run's usage counters)."""
    out = json.loads(json.dumps(metrics))
    (out.get("judge") or {}).pop("usage", None)
    return out


def _killed_when_held(server: JudgeServer, args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """`ecr args` in a subprocess, killed (kill -9) once the server holds the request of its phase's `hold_at`;
    the held request is released afterwards, whatever happened."""
    full_env = {**os.environ, "PYTHONPATH": str(HERE), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **env}
    child = subprocess.Popen(  # noqa: S603 - our own console script
        ecr_command() + args, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert server.held.wait(120), f"the killed run never reached its {server.hold_at}th request"
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
        server.release.set()
    return child


def test_killed_judge_run_resumes_from_the_cache_without_paying_twice(server: JudgeServer, tmp_path: Path) -> None:
    predictions = _predictions(tmp_path / "predictions.jsonl")
    env = {ENV: KEY}

    # an uninterrupted run (its own cache): the reference metrics
    server.phase()
    ref_out = tmp_path / "ref" / "metrics.json"
    proc = run_ecr(_args(server, predictions, ref_out), cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = json.loads(ref_out.read_text(encoding="utf-8"))
    paid_reference = Counter(server.paid)
    assert all(n == 1 for n in paid_reference.values()), paid_reference  # retried 500s are not paid twice
    assert reference["missing"] >= 4 and reference["judged"] == len(THINKS) - reference["missing"]
    assert {"no_think", "off_list"} <= set(reference["missing_reasons"]), reference["missing_reasons"]

    # the same run killed (kill -9) while its 9th request is in flight
    server.paid.clear()
    server.phase(hold_at=9)
    out = tmp_path / "run" / "metrics.json"
    child = _killed_when_held(server, _args(server, predictions, out), cwd=tmp_path, env=env)
    assert child.returncode == -signal.SIGKILL
    assert not out.exists()
    paid_before_kill = {r for r, n in server.paid.items() if n}
    assert len(paid_before_kill) >= 4, server.paid

    # rerun: every answer paid before the kill comes from the cache
    server.phase()
    proc = run_ecr(_args(server, predictions, out), cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = json.loads(out.read_text(encoding="utf-8"))
    asked_again = set(server.requests) & paid_before_kill
    assert asked_again == set(), f"repeated paid calls: {sorted(asked_again)}"
    assert server.paid == paid_reference, "killed + resumed paid for a different set of answers than one run"
    assert "BROKENBODY he looks sad." in paid_before_kill  # a billed unusable reply, cached as a failure
    usage = resumed["judge"]["usage"]
    assert usage["cache_hits"] + usage.get("cached_failures", 0) >= len(paid_before_kill), usage
    missing = {"no_think": 1, "off_list": 1, "retries_exhausted": 1, "malformed_response": 1}
    assert resumed["missing_reasons"] == missing and resumed["missing"] == sum(missing.values())
    assert _comparable(resumed) == _comparable(reference)

    record_outcome(TABLE, "kill -9 mid-run, then rerun", "ecr score", "0 repeated paid calls; metrics equal")
    for kind, reason in (
        ("HTTP 500 once (FAIL500x1)", None),
        ("HTTP 500 always", "retries_exhausted"),
        ("200, reply not a label", "off_list"),
        ("200, body not JSON", "malformed_response"),
        ("no think block", "no_think"),
    ):
        if reason is None:
            outcome = "retried, judged"
        else:
            outcome = f"counted missing ({reason}: {resumed['missing_reasons'][reason]})"
        record_outcome(TABLE, kind, "ecr score", outcome)


def test_abandoned_requests_count_against_the_concurrency_limit(tmp_path: Path) -> None:
    """A server slower than the client's timeout: the requests it is still working on (the client gave up on
    them, the server may bill them) count against `concurrency`, so it never sees more than that at once."""
    state = {"now": 0, "most": 0, "total": 0}
    lock = threading.Lock()

    class Slow(ChatHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            body = self.read_request()
            with lock:
                state["now"] += 1
                state["total"] += 1
                state["most"] = max(state["most"], state["now"])
            threading.Event().wait(0.6)  # longer than the client's 0.5 s timeout: every request is abandoned
            with lock:
                state["now"] -= 1
            self.send_completion(body["model"], "happy")

    think = "This clip looks happy."
    rows = [{"id": f"c{i}", "label": "happy", "prediction": "happy", "think": f"{i}. {think}"} for i in range(6)]
    predictions = tmp_path / "p.jsonl"
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with serve(Slow) as url:
        args = ["score", "--predictions", str(predictions), "--labels", "dfew", "--judge", "openai", "--bootstrap",
                "0", "--openai.model", "m", "--openai.base_url", url, "--openai.api_key_env", ENV,
                "--openai.max_retries", "1", "--openai.backoff", "0.01", "--openai.backoff_max", "0.02",
                "--openai.concurrency", "2", "--openai.timeout", "0.5"]  # fmt: skip
        proc = run_ecr(args, cwd=tmp_path, env={ENV: KEY}, timeout=240)
    record_outcome(TABLE, "slow server, short client timeout", "ecr score",
                   f"{state['total']} requests, at most {state['most']} in flight (concurrency 2)")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert state["total"] == 12  # 6 prompts, each timed out twice (missing: retries_exhausted)
    assert state["most"] <= 2, state
