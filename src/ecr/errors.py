"""Exception types. Every error raised for bad input names the file/field and what was expected."""

from __future__ import annotations


class ECRError(Exception):
    """Base class of all errors `ecr` raises on purpose."""


class LabelError(ECRError, ValueError):
    """A label that is not in the active label set, or a label mapping that cannot be resolved."""


class ConfigError(ECRError, ValueError):
    """A configuration value that is inconsistent or missing."""


class ManifestError(ECRError, ValueError):
    """A manifest/label file row that cannot be read (bad column, unknown label, path escaping the root)."""


class ClipError(ECRError):
    """A clip that cannot be used: unreadable/corrupt, no audio stream, empty, or a window outside the clip.

    `path` is the offending file and `reason` a short machine-readable tag
    ("unreadable", "no_audio", "empty", "window", "duration_mismatch").
    """

    def __init__(self, path: str, reason: str, detail: str) -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}: {detail}")


class MediaTokenMismatchError(ECRError, ValueError):
    """The number of media placeholder tokens differs from the number of encoder features of a sample."""


class TeacherError(ECRError):
    """A teacher (pseudo-labeller) call failed in a way that is not a per-item 'missing' answer."""
