"""OpenAI-compatible chat teacher (GPT-4.1 in the paper; any chat-completions server works).

The model reads one emotional description and names up to two labels of the label space, as JSON. Design:
- the API key comes from the environment only: the config holds the NAME of the variable (`api_key_env`);
  the value is never logged, saved, put in hyper-parameters or in error messages;
- bounded concurrency (a thread pool of `concurrency` workers sharing one client); a request the client gave up
  on (timeout) keeps its slot for one more `timeout`, as the server may still be working on it (and may bill
  it: a timed-out paid call is not necessarily free);
- retries with exponential backoff on timeouts, connection errors, 429 and 5xx (a server's Retry-After is
  honoured up to `backoff_max`); the client's own retries are off so every attempt is counted here;
- every reply is appended to the `AnswerCache` BEFORE it is parsed or used (rerun = no second payment); an
  HTTP-200 reply with an unusable body (no choices, invalid JSON) is cached too, as a counted failure that a
  rerun reports again without asking (`retry_failures: true` asks again), and the cache is locked to one run;
- strict parsing: the reply must be a JSON object `{"labels": [...]}` (optionally in a ``` fence) with 1..2
  labels that map into the label space; anything else is `Missing("unparseable" | "off_list" | ...)`;
- authentication / permission / unknown-model errors abort the run (`TeacherError`): they would fail every
  item, and marking them all missing would hide a configuration mistake.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ecr.errors import ConfigError, TeacherError
from ecr.extras import require
from ecr.labels import NEUTRAL, LabelSet, resolve_label_space
from ecr.teachers.base import Missing, TeacherLabel, TeacherResult, map_into_space
from ecr.teachers.cache import AnswerCache, cache_key

log = logging.getLogger(__name__)

LABEL_PROMPT = (
    "Which emotion or emotions does the following description of a person express? Choose one label, or two "
    'if two emotions are clearly present, from this list: {labels}. Answer "neutral" only when no emotion '
    'is expressed. Reply with JSON only, in the form {{"labels": ["{example}"]}}.\n\nDescription: {text}'
)
PARAPHRASE_PROMPT = (
    "Rewrite the following description of a person in {n} different ways. Keep its meaning and the emotion it "
    'expresses; vary the wording. Reply with JSON only, in the form {{"paraphrases": ["..."]}}.\n\n'
    "Description: {text}"
)
SYSTEM_PROMPT = "You are a careful annotator of emotions in text."
PROMPT_VERSION = hashlib.sha256((SYSTEM_PROMPT + LABEL_PROMPT + PARAPHRASE_PROMPT).encode()).hexdigest()[:12]
BILLED_FAILURES = frozenset({"malformed_response"})  # HTTP 200 with an unusable body
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL | re.IGNORECASE)


@dataclass
class OpenAIConfig:
    """Settings of the chat teacher (no secret here: only the name of the variable holding the key)."""

    model: str = "gpt-4.1"
    """Chat model name."""
    base_url: str | None = None
    """Server URL (e.g. http://127.0.0.1:8000/v1); None = the client default / OPENAI_BASE_URL."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable that holds the API key."""
    temperature: float = 0.0
    """Sampling temperature of the teacher (0 = as deterministic as the server allows)."""
    max_tokens: int = 64
    """Longest reply in tokens (a JSON label list needs few)."""
    timeout: float = 30.0
    """Seconds per request."""
    max_retries: int = 5
    """Retries after the first attempt on timeouts, connection errors, 429 and 5xx."""
    backoff: float = 1.0
    """First backoff in seconds, doubled each retry (with jitter)."""
    backoff_max: float = 30.0
    """Longest wait between retries in seconds (also caps a server's Retry-After)."""
    concurrency: int = 8
    """Requests in flight at once."""
    retry_failures: bool = False
    """Ask again for prompts whose earlier (billed) reply was unusable; by default they stay missing."""


def _json_object(reply: str) -> dict | Missing:
    """The JSON object of a reply (a ```json fence is allowed), or Missing("unparseable")."""
    text = reply.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return Missing("unparseable", reply[:200])
    return obj if isinstance(obj, dict) else Missing("unparseable", reply[:200])


def parse_label_reply(reply: str, space: LabelSet, max_labels: int = 2) -> TeacherResult:
    """Strictly parse `{"labels": [...]}` into a `TeacherLabel`, or say why it is missing."""
    obj = _json_object(reply)
    if isinstance(obj, Missing):
        return obj
    labels = obj.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        return Missing("unparseable", reply[:200])
    if len(labels) > max_labels:
        return Missing("too_many_labels", reply[:200])
    mapped = []
    for word in labels:
        hit = map_into_space(word, space)
        if hit is None:
            return Missing("off_list", word[:100])
        if hit not in mapped:
            mapped.append(hit)
    if len(mapped) > 1 and NEUTRAL in mapped:  # "neutral + X" means X
        mapped.remove(NEUTRAL)
    return TeacherLabel(tuple(mapped))


def parse_paraphrase_reply(reply: str) -> list[str] | Missing:
    obj = _json_object(reply)
    if isinstance(obj, Missing):
        return obj
    items = obj.get("paraphrases")
    if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
        return Missing("unparseable", reply[:200])
    return [x.strip() for x in items]


class OpenAITeacher:
    """Chat-completions pseudo-labeller with retries, bounded concurrency and a durable answer cache."""

    system_prompt: str | None = SYSTEM_PROMPT  # None: the prompt alone, as a user message (the paper's judge)

    name = "openai"

    def __init__(
        self,
        labels: str | Sequence[str] = "dfew",
        *,
        config: OpenAIConfig | None = None,
        cache_path: str | os.PathLike[str],
        max_labels: int = 2,
        client: Any = None,
    ) -> None:
        self.config = config or OpenAIConfig()
        self.label_names = resolve_label_space(labels)
        self.space = LabelSet("space", self.label_names)
        self.max_labels = max_labels
        self.cache = AnswerCache(cache_path)
        self.counts: Counter[str] = Counter()
        self._count_lock = threading.Lock()
        self._client = client
        self._secret: str | None = None
        self._slots = threading.Semaphore(max(1, self.config.concurrency))  # requests the server may be working on

    # -- client and secrets ------------------------------------------------------------------------------------
    def _get_client(self) -> Any:
        if self._client is None:
            openai = require("openai", "the API teacher/judge (openai chat completions)")

            key = os.environ.get(self.config.api_key_env)
            if not key:
                raise ConfigError(
                    f"openai teacher: environment variable {self.config.api_key_env!r} is not set "
                    "(the API key is read from the environment only)"
                )
            self._secret = key
            self._client = openai.OpenAI(
                api_key=key, base_url=self.config.base_url, timeout=self.config.timeout, max_retries=0
            )
        return self._client

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def settings(self) -> dict[str, Any]:
        """Cache/provenance identity (model, server, prompt version, labels); the key is never included."""
        return {
            "teacher": self.name,
            "model": self.config.model,
            "base_url": self.config.base_url,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
            "labels": list(self.label_names),
            "prompt_version": PROMPT_VERSION,
        }

    def _count(self, key: str, n: int = 1) -> None:
        with self._count_lock:
            self.counts[key] += n

    # -- one request with retries ------------------------------------------------------------------------------
    def _messages(self, prompt: str) -> list[dict[str, str]]:
        """The chat request: the `system_prompt` (when set) and the prompt as the user message."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt is not None else []
        return [*system, {"role": "user", "content": prompt}]

    def _ask(self, prompt: str, max_tokens: int) -> str | Missing:
        openai = require("openai", "the API teacher/judge (openai chat completions)")

        client = self._get_client()
        cfg = self.config
        last = ""
        for attempt in range(cfg.max_retries + 1):
            if attempt:
                self._count("retries")
            self._count("requests")
            try:
                resp = self._create(client, prompt, max_tokens)
                if not resp.choices:
                    return Missing("malformed_response", "no choices")
                return resp.choices[0].message.content or ""
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
                raise TeacherError(
                    f"openai teacher: {type(exc).__name__} (HTTP {exc.status_code}) from "
                    f"{cfg.base_url or 'the default server'} for model {cfg.model!r}: {self._redact(str(exc))[:300]}"
                ) from None
            except (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError,
                    openai.InternalServerError) as exc:  # fmt: skip
                last = type(exc).__name__
                delay = self._retry_after(exc) or min(cfg.backoff_max, cfg.backoff * 2**attempt)
                if attempt < cfg.max_retries:
                    time.sleep(min(cfg.backoff_max, delay) * (0.5 + random.random() / 2))
            except openai.APIStatusError as exc:  # other 4xx: this item cannot be answered
                return Missing(f"http_{exc.status_code}", self._redact(str(exc))[:200])
            except (openai.APIResponseValidationError, ValueError, AttributeError, TypeError) as exc:
                return Missing("malformed_response", self._redact(str(exc))[:200])
        return Missing("retries_exhausted", last)

    def _create(self, client: Any, prompt: str, max_tokens: int) -> Any:
        """One request, holding one of the `concurrency` slots while the server may be working on it.

        A timed-out request is abandoned by the client only: the server may still be working on it (and bill
        it). Its slot is kept for one more `timeout` before it is released, so retries do not pile new requests
        on top of the abandoned ones (a slow server saw 55 in flight against `concurrency: 8` before).
        """
        openai = require("openai", "the API teacher/judge (openai chat completions)")

        self._slots.acquire()
        release_now = True
        try:
            cfg = self.config
            return client.chat.completions.create(
                model=cfg.model, messages=self._messages(prompt), temperature=cfg.temperature, max_tokens=max_tokens
            )
        except openai.APITimeoutError:
            release_now = False
            timer = threading.Timer(self.config.timeout, self._slots.release)
            timer.daemon = True
            timer.start()
            raise
        finally:
            if release_now:
                self._slots.release()

    @staticmethod
    def _retry_after(exc: Exception) -> float | None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None) or {}
        for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
            value = headers.get(name)
            if value is not None:
                try:
                    return float(value) * scale
                except ValueError:
                    return None
        return None

    # -- cached calls ------------------------------------------------------------------------------------------
    def _cached_reply(self, kind: str, text: str, prompt: str, max_tokens: int) -> str | Missing:
        key = cache_key(kind, text, {**self.settings(), "max_labels": self.max_labels})
        hit = self.cache.get(key)
        if hit is not None and "failure" not in hit:
            self._count("cache_hits")
            return str(hit["reply"])
        if hit is not None and not self.config.retry_failures:
            self._count("cached_failures")
            return Missing(
                str(hit["failure"]), f"cached unusable reply ({hit.get('detail', '')}); retry_failures asks again"
            )
        reply = self._ask(prompt, max_tokens)
        record = {"kind": kind, "text": text, "model": self.config.model}
        if isinstance(reply, Missing):
            if reply.reason in BILLED_FAILURES:  # the server answered (and billed): remember it
                self.cache.put(key, {**record, "reply": None, "failure": reply.reason, "detail": reply.detail})
            return reply
        self.cache.put(key, {**record, "reply": reply})
        return reply

    def label_one(self, text: str) -> TeacherResult:
        prompt = LABEL_PROMPT.format(labels=", ".join(self.label_names), example=self.label_names[0], text=text)
        reply = self._cached_reply("label", text, prompt, self.config.max_tokens)
        result = reply if isinstance(reply, Missing) else parse_label_reply(reply, self.space, self.max_labels)
        if isinstance(result, Missing):
            self._count(f"missing:{result.reason}")
        return result

    def label(self, texts: Sequence[str]) -> list[TeacherResult]:
        """Label many texts with at most `concurrency` requests in flight; results in input order."""
        self._get_client()
        with ThreadPoolExecutor(max_workers=max(1, self.config.concurrency)) as pool:
            return list(pool.map(self.label_one, texts))

    def paraphrase(self, text: str, n: int) -> list[str] | Missing:
        """`n` paraphrases of a text (used to augment rare classes), cached like labels."""
        prompt = PARAPHRASE_PROMPT.format(n=n, text=text)
        reply = self._cached_reply(f"paraphrase{n}", text, prompt, max(256, 64 * n))
        return reply if isinstance(reply, Missing) else parse_paraphrase_reply(reply)
