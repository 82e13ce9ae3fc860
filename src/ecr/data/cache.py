"""On-disk cache of decoded clips, so later epochs read tensors instead of decoding video again.

An entry is keyed by the identity of the media files (absolute path, size, mtime_ns of the video and of the
separate audio file) and by every decoding setting (frames, window, sample rate), so editing a file or
changing a setting can never return stale tensors. Entries are `torch.save` files written atomically
(temporary file + `os.replace`), so parallel DataLoader workers and interrupted runs never leave a torn entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from ecr.data.types import ClipRecord, DecodedClip

CACHE_FORMAT = 2  # bump when the decoded representation or the acceptance rules change (2: duration, truncation)


def _identity(path: Path | None) -> list[object] | None:
    if path is None:
        return None
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


class ClipCache:
    """Decoded clips under `root/<2 hex>/<sha256>.pt`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def key(self, record: ClipRecord, *, num_frames: int, sample_rate: int) -> str | None:
        """Cache key of a record with these settings; None when a media file cannot be stat'ed."""
        try:
            ident = {
                "format": CACHE_FORMAT,
                "video": _identity(record.video),
                "audio": _identity(record.audio),
                "start": record.start,
                "end": record.end,
                "num_frames": num_frames,
                "sample_rate": sample_rate,
            }
        except OSError:
            return None
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pt"

    def load(self, key: str) -> DecodedClip | None:
        """The cached clip, or None on a miss (an unreadable entry is a miss and gets rewritten)."""
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            d = torch.load(p, map_location="cpu", weights_only=True)
            return DecodedClip(
                frames=d["frames"],
                frame_times=d["frame_times"],
                audio=d["audio"],
                sample_rate=int(d["sample_rate"]),
                duration=float(d["duration"]),
                start=float(d["start"]),
            )
        except Exception:  # a torn/foreign file: decode again and overwrite it
            return None

    def save(self, key: str, clip: DecodedClip) -> Path:
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "frames": clip.frames,
            "frame_times": clip.frame_times,
            "audio": clip.audio,
            "sample_rate": clip.sample_rate,
            "duration": clip.duration,
            "start": clip.start,
        }
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-", suffix=".pt")
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(payload, fh)
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return p
