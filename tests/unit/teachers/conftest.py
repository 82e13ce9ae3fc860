"""A real local HTTP server speaking the chat-completions protocol, with scripted faults.

The description sent by the teacher ends the user message ("Description: <text>"); markers inside it choose
the behaviour:
  FAIL500xN   -> HTTP 500 for the first N attempts, then an answer
  RATE429xN   -> HTTP 429 (Retry-After-Ms: 5) for the first N attempts, then an answer
  SLOWxN      -> sleep past the client timeout for the first N attempts, then an answer
  ALWAYS500   -> HTTP 500 forever
  GARBAGE     -> a 200 reply whose content is prose, not JSON
  OFFLIST     -> a 200 reply naming a label outside the label space
  BROKENBODY  -> a 200 response whose body is not JSON at all
Otherwise the answer names the first DFEW emotion word found in the text (neutral if none).
A paraphrase request gets three variants "<text> (variant i)". Model "forbidden-model" gets HTTP 401.
Every request is recorded (text, attempt number, auth header), and the most requests in flight at once.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from ecr.fixtures.chat_server import ChatHandler, serve

KEY = "sk-test-SECRET-value-0123456789"
WORDS = ["happy", "sad", "angry", "surprise", "disgust", "fear"]


@dataclass
class ChatServer:
    url: str
    requests: list[tuple[str, str]] = field(default_factory=list)  # (text, authorization header)
    attempts: Counter = field(default_factory=Counter)
    delay: float = 0.0
    slow_seconds: float = 1.5
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def texts(self) -> Counter:
        with self.lock:
            return Counter(t for t, _ in self.requests)


def _answer(text: str) -> str:
    if "OFFLIST" in text:
        return json.dumps({"labels": ["jealousy"]})
    if "GARBAGE" in text:
        return "I think the person is quite happy, honestly."
    found = [w for w in WORDS if w in text.lower()]
    if "PAIR" in text and len(found) >= 2:
        return "```json\n" + json.dumps({"labels": found[:2]}) + "\n```"
    return json.dumps({"labels": found[:1] or ["neutral"]})


def _make_handler(state: ChatServer) -> type[ChatHandler]:
    class Handler(ChatHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            with state.lock:
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                self._respond()
            finally:
                with state.lock:
                    state.in_flight -= 1

        def _respond(self) -> None:
            body = self.read_request()
            content = body["messages"][-1]["content"]
            text = content.rsplit("Description: ", 1)[-1]
            paraphrase = content.startswith("Rewrite the following")
            with state.lock:
                state.requests.append((text, self.headers.get("Authorization", "")))
                state.attempts[text] += 1
                attempt = state.attempts[text]
            if state.delay:
                time.sleep(state.delay)
            if body.get("model") == "forbidden-model":
                return self.send(401, {"error": {"message": "bad key", "type": "auth"}})
            for marker, code in (("FAIL500", 500), ("RATE429", 429), ("SLOW", 0)):
                m = re.search(marker + r"x(\d+)", text)
                if m and attempt <= int(m.group(1)):
                    if code == 0:
                        time.sleep(state.slow_seconds)
                        break
                    headers = {"Retry-After-Ms": "5"} if code == 429 else {}
                    return self.send(code, {"error": {"message": marker}}, headers)
            if "ALWAYS500" in text:
                return self.send(500, {"error": {"message": "down"}})
            if "BROKENBODY" in text:
                return self.send(200, b"<html>not json</html>")
            answer = (
                json.dumps({"paraphrases": [f"{text} (variant {i})" for i in range(3)]})
                if paraphrase
                else _answer(text)
            )
            return self.send_completion(body["model"], answer)

    return Handler


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    state = ChatServer(url="")
    with serve(_make_handler(state)) as url:
        state.url = url
        yield state
