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

import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from ecr.fixtures.chat_server import ChatHandler, serve

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


def _handler(state: JudgeServer) -> type[ChatHandler]:
    class Handler(ChatHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            body = self.read_request()
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
                return self.send(401, {"error": {"message": "key revoked", "type": "auth"}})
            fail = re.search(r"FAIL500x(\d+)", reason)
            if "ALWAYS500" in reason or (fail and attempt <= int(fail.group(1))):
                return self.send(500, {"error": {"message": "down"}})
            return self.send_completion(body["model"], _reply(reason))

    return Handler


@pytest.fixture
def judge_server() -> Iterator[JudgeServer]:
    state = JudgeServer(url="")
    with serve(_handler(state)) as url:
        state.url = url
        yield state
