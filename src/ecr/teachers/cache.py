"""Append-only JSONL cache of teacher answers, so a crash or rerun loses nothing and pays for nothing twice.

Every reply is written (flushed and fsynced) BEFORE it is used. A key is the SHA-256 of the request text plus
the teacher settings that change the answer (model, prompt version, label space, temperature, ...), so a
changed prompt or model never reuses stale answers. A process killed mid-write leaves at most a truncated last
line, which is skipped (and counted) on the next load, as is a line that is not UTF-8. Real replies are
stored, and so are replies the server sent (and billed) but that hold no usable answer (recorded with a
`failure` field by the teacher); transport failures are not, so a rerun retries them.

One process at a time: the cache takes an exclusive lock (`flock` on `<cache>.lock`, held by the process until
it ends, and released by the kernel even after kill -9), so two runs on the same output cannot both pay for
every prompt; the second stops at once with a `TeacherError` naming the file. Caches opened again in the same
process share the lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ecr.errors import TeacherError


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
        _exclusive_lock(self.path.with_name(self.path.name + ".lock"), self.path)
        if self.path.exists():
            with self.path.open("rb") as fh:
                for raw in fh:
                    try:
                        row = json.loads(raw.decode("utf-8"))
                        self._data[row["key"]] = row
                    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
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


_HELD: dict[str, Any] = {}  # lock file -> its open file object (kept open: the lock lasts as long as the process)
_HELD_LOCK = threading.Lock()


def _exclusive_lock(lock_path: Path, cache_path: Path) -> None:
    """`flock` `lock_path` for this process (non-blocking; once per process and file)."""
    key = str(lock_path.resolve())
    with _HELD_LOCK:
        if key not in _HELD:
            _HELD[key] = _flock(lock_path, cache_path)


def _flock(lock_path: Path, cache_path: Path) -> Any:
    fh = lock_path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise TeacherError(
            f"{cache_path}: the answer cache is in use by {holder}; wait for that `ecr label` run to finish "
            "(two runs on one output would each pay for every prompt)"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}\n")
    fh.flush()
    return fh
