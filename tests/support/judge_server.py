"""A real local HTTP server speaking the chat-completions protocol, answering the paper's judge prompt.

The reason is the text between "Reason: " and "\\nAnswer Emotion:" of the last user message; markers inside
it choose the behaviour:
  FAIL500xN   -> HTTP 500 for the first N attempts (this phase), then an answer
  ALWAYS500   -> HTTP 500 forever (a missing answer, never a label)
  OFFLIST     -> the reply "jealousy" (not a label: a counted failure)
  SHOUT       -> the reply "Happy." (normalises to happy)
  BROKENBODY  -> an HTTP 200 whose body is not JSON
Otherwise the reply is the first DFEW emotion word in the reason ("neutral" if none). `deny_after` = N makes
every request after the N-th an HTTP 401 (a revoked key). `phase(hold_at=N)` starts a phase whose N-th request
hangs, never answered, until `release` is set (a test kills the client while it is in flight). Every request is
recorded; `paid` counts the HTTP 200 answers per reason over all phases.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ecr.fixtures.chat_server import ChatHandler, serve

WORDS = ["happy", "sad", "angry", "surprise", "disgust", "fear"]
REASON = re.compile(r"Reason: (.*)\nAnswer Emotion:$", re.DOTALL)


@dataclass
class JudgeServer:
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    reasons: list[str] = field(default_factory=list)  # every request's reason, all phases
    prompts: list[str] = field(default_factory=list)
    roles: list[list[str]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # reasons, this phase
    attempts: Counter = field(default_factory=Counter)  # reason -> attempts, this phase
    paid: Counter = field(default_factory=Counter)  # reason -> HTTP 200 replies, all phases
    deny_after: int | None = None
    hold_at: int | None = None
    held: threading.Event = field(default_factory=threading.Event)  # a request is being held
    release: threading.Event = field(default_factory=threading.Event)

    def phase(self, hold_at: int | None = None) -> None:
        with self.lock:
            self.requests, self.attempts, self.hold_at = [], Counter(), hold_at
            self.held.clear()
            self.release.clear()


def reply(reason: str) -> str:
    """The judge's answer to a reason without a fault marker."""
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
            m = REASON.search(content)
            reason = m.group(1) if m else ""
            with state.lock:
                state.reasons.append(reason)
                state.prompts.append(content)
                state.roles.append([msg["role"] for msg in body["messages"]])
                state.requests.append(reason)
                state.attempts[reason] += 1
                attempt, total, n = state.attempts[reason], len(state.reasons), len(state.requests)
                hold = state.hold_at is not None and n == state.hold_at
            if hold:
                state.held.set()
                state.release.wait(30)
                return None
            if state.deny_after is not None and total > state.deny_after:
                return self.send(401, {"error": {"message": "key revoked", "type": "auth"}})
            fail = re.search(r"FAIL500x(\d+)", reason)
            if "ALWAYS500" in reason or (fail and attempt <= int(fail.group(1))):
                return self.send(500, {"error": {"message": "down"}})
            with state.lock:
                state.paid[reason] += 1
            if "BROKENBODY" in reason:
                return self.send(200, b"<html>not json</html>")
            return self.send_completion(body["model"], reply(reason))

    return Handler


@contextmanager
def judge_server() -> Iterator[JudgeServer]:
    """A running judge server (its `url` set); a held request is released when the block ends."""
    state = JudgeServer()
    with serve(_handler(state)) as url:
        state.url = url
        try:
            yield state
        finally:
            state.release.set()
