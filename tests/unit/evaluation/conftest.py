"""A real local HTTP server speaking the chat-completions protocol, answering the paper's judge prompt.

The reason is the text between "Reason: " and "\nAnswer Emotion:" of the user message; markers inside it choose
the behaviour:
  FAIL500xN  -> HTTP 500 for the first N attempts, then an answer
  ALWAYS500  -> HTTP 500 forever
  OFFLIST    -> the reply "jealousy" (not a label)
  SHOUT      -> the reply "Happy." (normalises to happy)
Otherwise the reply is the first DFEW emotion word in the reason ("neutral" if none). `deny_after` = N makes
every request after the N-th an HTTP 401 (an aborted run). Every request is recorded.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

KEY = "sk-judge-SECRET-0123456789"
WORDS = ["happy", "sad", "angry", "surprise", "disgust", "fear"]


@dataclass
class JudgeServer:
    url: str
    reasons: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    roles: list[list[str]] = field(default_factory=list)
    attempts: Counter = field(default_factory=Counter)
    deny_after: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _reply(reason: str) -> str:
    if "OFFLIST" in reason:
        return "jealousy"
    if "SHOUT" in reason:
        return "Happy."
    found = [w for w in WORDS if w in reason.lower()]
    return found[0] if found else "neutral"


def _handler(state: JudgeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def _send(self, code: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_POST(self) -> None:  # noqa: N802 - http.server API
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            content = body["messages"][-1]["content"]
            m = re.search(r"Reason: (.*)\nAnswer Emotion:$", content, re.DOTALL)
            reason = m.group(1) if m else ""
            with state.lock:
                state.reasons.append(reason)
                state.prompts.append(content)
                state.roles.append([msg["role"] for msg in body["messages"]])
                state.attempts[reason] += 1
                attempt, total = state.attempts[reason], len(state.reasons)
            if state.deny_after is not None and total > state.deny_after:
                return self._send(401, {"error": {"message": "key revoked", "type": "auth"}})
            fail = re.search(r"FAIL500x(\d+)", reason)
            if "ALWAYS500" in reason or (fail and attempt <= int(fail.group(1))):
                return self._send(500, {"error": {"message": "down"}})
            return self._send(200, {
                "id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": _reply(reason)}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            })  # fmt: skip

    return Handler


@pytest.fixture
def judge_server() -> Iterator[JudgeServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), None)  # type: ignore[arg-type]
    state = JudgeServer(url=f"http://127.0.0.1:{httpd.server_address[1]}/v1")
    httpd.RequestHandlerClass = _handler(state)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
