"""The row plumbing every manifest reader shares: field aliases, labels, splits, paths under the root, errors.

Used by the custom reader (`ecr.data.manifests`), the released datasets' readers (`ecr.data.release_readers`)
and the text rows (`ecr.data.text`), so a bad cell reads the same `file:line` error whichever reader met it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ecr.errors import LabelError, ManifestError
from ecr.labels import LabelSet

Split = Literal["train", "val", "test"]
SPLIT_ALIASES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
VIDEO_EXTS: tuple[str, ...] = (".mp4", ".avi", ".mkv", ".webm", ".mov")


def record_error(err: ManifestError, errors: list[ManifestError] | None) -> None:
    """Raise `err` (`errors` is None: the first bad row stops the reader) or append it to `errors` and go on.

    Every reader's `errors` argument goes through this, so `ecr data check` can report all bad rows at once.
    """
    if errors is None:
        raise err
    errors.append(err)


def resolve_under_root(root: Path, rel: str, where: str) -> Path:
    """`root / rel`, normalised; a path escaping `root` is an error: via `..`, an outside absolute path, or a
    symlink inside the root that points outside it (checked on the resolved paths; the root itself may be a link).
    """
    if not rel or not str(rel).strip():
        raise ManifestError(f"{where}: empty path")
    root_n = Path(os.path.normpath(os.path.abspath(root)))
    full = Path(os.path.normpath(root_n / Path(rel).expanduser()))
    if not _inside(full, root_n):
        raise ManifestError(f"{where}: path {rel!r} escapes the dataset root {str(root_n)!r}")
    real, real_root = full.resolve(), root_n.resolve()
    if not _inside(real, real_root):
        raise ManifestError(
            f"{where}: path {rel!r} is a symlink to {str(real)!r}, outside the dataset root {str(real_root)!r}"
        )
    return full


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def canonical_label(label_set: LabelSet, text: str, where: str) -> str:
    """`text` normalised to a label of `label_set` (synonyms allowed).

    Raises:
        ManifestError: `"{where}: unknown label ..."`, listing the label set (a manifest row's error, not a
            `LabelError`, so readers collect it like any other bad row).
    """
    try:
        return label_set.canonical(text, where=where)
    except LabelError as err:
        raise ManifestError(
            f"{where}: unknown label {text!r}; the label set {label_set.name!r} is {list(label_set.labels)}"
        ) from err


def find_clip(root: Path, subdirs: Sequence[str], stems: Sequence[str], where: str) -> Path:
    """First existing `root/sub/stem.ext`; else the first candidate (so the decoder reports it missing)."""
    candidates = [
        resolve_under_root(root, os.path.join(sub, stem + ext) if sub else stem + ext, where)
        for sub in subdirs
        for stem in stems
        for ext in VIDEO_EXTS
    ]
    return next((c for c in candidates if c.is_file()), candidates[0])


def normalize_split(value: Any, where: str) -> str | None:
    """The split of a cell: "train", "val" or "test" (aliases such as "dev", "validation" accepted); None if empty.

    Raises:
        ManifestError: `"{where}: unknown split ..."` for any other value.
    """
    if value is None or not str(value).strip():
        return None
    key = str(value).strip().lower()
    if key not in SPLIT_ALIASES:
        raise ManifestError(f"{where}: unknown split {value!r}; expected one of train/val/test")
    return SPLIT_ALIASES[key]


# ------------------------------------------------------------------------------------------------- custom
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "video": ("video", "video_path", "path", "file"),
    "audio": ("audio", "audio_path"),
    "label": ("label", "emotion", "emotions"),
    "explanation": ("explanation", "reason", "reasons", "rationale"),
    "start": ("start", "start_s", "start_time"),
    "end": ("end", "end_s", "end_time"),
    "split": ("split",),
    "id": ("id", "name", "names"),
}


def pick_field(row: dict[str, Any], key: str) -> Any:
    """The first non-empty value of manifest field `key` under any of its aliases, or None.

    Aliases are `FIELD_ALIASES[key]` (e.g. "label": label, emotion, emotions); rows come from
    `ecr.rows.iter_rows`, whose CSV keys are already lower-cased.
    """
    for alias in FIELD_ALIASES[key]:
        if alias in row and row[alias] not in (None, ""):
            return row[alias]
    return None
