"""Append-only JSONL cache of teacher answers, so a crash or rerun loses nothing and pays for nothing twice.

Every reply is written (flushed and fsynced) BEFORE it is used. A key is the SHA-256 of the request text plus
the teacher settings that change the answer (model, prompt version, label space, temperature, ...), so a
changed prompt or model never reuses stale answers. A process killed mid-write leaves at most a truncated last
line, which is skipped (and counted) on the next load. Only real replies are stored — transport failures are
not, so a rerun retries them.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def cache_key(kind: str, text: str, settings: Mapping[str, Any]) -> str:
    """Stable key of one request: kind ("label", "paraphrase"), the text and the teacher settings."""
    payload = json.dumps({"kind": kind, "text": text, "settings": settings}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class AnswerCache:
    """A thread-safe key -> record map persisted as JSONL lines `{"key": ..., **record}`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, Any]] = {}
        self.skipped_lines = 0
        if self.path.exists():
            with self.path.open(encoding="utf-8") as fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                        self._data[row["key"]] = row
                    except (json.JSONDecodeError, KeyError, TypeError):
                        self.skipped_lines += 1  # a line cut by a kill; its request is simply redone

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def get(self, key: str) -> dict[str, Any] | None:
        return self._data.get(key)

    def put(self, key: str, record: Mapping[str, Any]) -> None:
        """Persist one record durably, then make it visible."""
        row = {"key": key, **record}
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            self._data[key] = row
