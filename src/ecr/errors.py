"""Exception types. Every error raised for bad input names the file/field and what was expected.

Besides the types: which OS errors are the user's to fix (`is_user_os_error`: a path the command line named, a
full or read-only disk; `ecr` prints those as one line) and the reason of a failed write (`write_failure`), and
the writers that leave no half-written output behind (`cleaned_on_failure`, `atomic_output`).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


class ECRError(Exception):
    """Base class of all errors `ecr` raises on purpose."""


class LabelError(ECRError, ValueError):
    """A label that is not in the active label set, or a label mapping that cannot be resolved."""


class ConfigError(ECRError, ValueError):
    """A configuration value that is inconsistent or missing."""


class ManifestError(ECRError, ValueError):
    """A manifest/label file row that cannot be read (bad column, unknown label, path escaping the root)."""


class ClipError(ECRError):
    """A clip that cannot be used: unreadable/corrupt/truncated, no audio stream, empty, a window outside the
    clip, or audio that does not cover it.

    `path` is the offending file and `reason` a short machine-readable tag
    ("unreadable", "truncated", "no_audio", "empty", "window", "duration_mismatch").
    """

    def __init__(self, path: str, reason: str, detail: str) -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}: {detail}")


class MediaTokenMismatchError(ECRError, ValueError):
    """The number of media placeholder tokens differs from the number of encoder features of a sample."""


class TrainingDivergedError(ECRError):
    """Training stopped because it diverged (non-finite losses/gradients in a row, or non-finite weights after
    a step); the checkpoints already written hold the last good weights."""


class VerifierOutputError(ECRError):
    """A verifier returned non-finite probabilities mid-run: they must never become rewards or metrics."""


class CheckpointWriteError(ECRError):
    """A checkpoint could not be written (e.g. the disk is full); the file it would have replaced is intact."""


class OutputWriteError(ECRError):
    """An output (an export folder, a predictions or labels file) could not be written, e.g. the disk is full;
    its partial files were removed."""


class TeacherError(ECRError):
    """A teacher (pseudo-labeller) call failed in a way that is not a per-item 'missing' answer."""


def first_non_utf8(data: bytes) -> tuple[int, int]:
    """(line, column), both 1-based, of the first byte sequence in `data` that is not UTF-8; (0, 0) if none."""
    for lineno, line in enumerate(data.splitlines(keepends=True), 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as err:
            return lineno, err.start + 1
    return 0, 0


@contextmanager
def reading_text(path: str | os.PathLike[str]) -> Iterator[None]:
    """Reading `path` as UTF-8 text: a `UnicodeDecodeError` becomes a `ManifestError` naming `file:line`.

    Python's own error names neither the file nor the line (and text files decode in chunks, so its byte
    position is not the line's); the file is read again as bytes to find them.
    """
    try:
        yield
    except UnicodeDecodeError as err:
        line, col = first_non_utf8(Path(path).read_bytes())
        where = f"{os.fspath(path)}:{line}" if line else os.fspath(path)
        raise ManifestError(f"{where}: not UTF-8 text (column {col}: {err.reason}); re-save the file as UTF-8") from err


_OS_ERROR_CODE = re.compile(r"(?:os error |Os \{ code: )(\d+)")  # how Rust libraries (safetensors) report one


def write_failure(err: BaseException) -> str | None:
    """The OS reason of a failed write (`err`, its cause chain, or a Rust library's "os error 28"); None if
    `err` is not an I/O failure (then it is a bug and keeps its traceback)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError):
            return seen.strerror or str(seen)
        found = _OS_ERROR_CODE.search(str(seen))
        if found:
            return os.strerror(int(found.group(1)))
        seen = seen.__cause__ or seen.__context__
    return None


# OSErrors about a path the user named (`is_user_os_error`); other OSErrors are bugs and keep their traceback
_USER_PATH_ERRORS = (PermissionError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError)
# errnos that are the machine's state, not a bug, whatever the path: a full disk / quota, a read-only file system
_USER_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS") if hasattr(errno, name))


def _command_line_paths(argv: Sequence[str]) -> list[str]:
    """Absolute forms of every command-line word that could be a path (`--opt=value` gives its value)."""
    out = []
    for arg in argv:
        value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
        if value and not value.startswith("-"):
            out.append(os.path.abspath(value))
    return out


def is_user_os_error(err: OSError, argv: Sequence[str]) -> bool:
    """Whether `err` is the user's to fix: a full disk or read-only file system (`ENOSPC`, `EDQUOT`, `EROFS`),
    or a missing/forbidden/wrong-kind path (`PermissionError`, `FileNotFoundError`, `NotADirectoryError`,
    `IsADirectoryError`, `FileExistsError`) that is, is inside, or is a folder above a path on the command line
    (`--out /proc/x` fails creating `/proc/x`; `--output /ro/dir/o.jsonl` fails creating `/ro/dir`).

    Any other OSError (a path the program chose itself, a socket, an OS bug) is not: it keeps its traceback.
    """
    if err.errno in _USER_ERRNOS:
        return True
    if not isinstance(err, _USER_PATH_ERRORS):
        return False
    named = _command_line_paths(argv)
    for filename in (err.filename, err.filename2):
        if filename is None or not isinstance(filename, (str, bytes, os.PathLike)):
            continue
        path = os.path.abspath(os.fsdecode(filename))
        for arg in named:
            if (
                path == arg
                or path.startswith(arg.rstrip(os.sep) + os.sep)
                or arg.startswith(path.rstrip(os.sep) + os.sep)
            ):
                return True
    return False


def os_error_message(err: OSError) -> str:
    """`"{path}: {OS reason}"` (both paths for a rename), or the OS reason alone when the error names no path."""
    reason = err.strerror or str(err)
    paths = [os.fsdecode(f) for f in (err.filename, err.filename2) if isinstance(f, (str, bytes, os.PathLike))]
    if not paths:
        return reason
    return f"{' -> '.join(paths)}: {reason}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def cleaned_on_failure(target: str | os.PathLike[str], *partial: Path) -> Iterator[None]:
    """On an I/O failure (a full disk) inside the block, remove the `partial` files/folders and raise an
    `OutputWriteError` naming `target` (an older `target` is kept); other errors are re-raised unchanged
    after the clean-up. Why: a failed write must say which output failed and leave nothing half-written."""
    try:
        yield
    except BaseException as err:
        for p in partial:
            _remove(p)
        reason = write_failure(err) if isinstance(err, Exception) else None
        if reason is None:
            raise
        kept = f"; the previous {target} is unchanged" if Path(target).exists() else ""
        raise OutputWriteError(f"writing {target} failed ({reason}); its partial files were removed{kept}") from err


@contextmanager
def atomic_output(target: str | os.PathLike[str], *, folder: bool = False) -> Iterator[Path]:
    """Write a file (or, `folder=True`, a folder) atomically: yields a temporary sibling to fill, renamed to
    `target` at the end (replacing an older one). A write that fails half-way (a full disk) leaves no partial
    output that looks complete, e.g. a model folder holding only config.json (`cleaned_on_failure`)."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    old = target.with_name(f".{target.name}.{os.getpid()}.old")
    _remove(tmp)
    with cleaned_on_failure(target, tmp):
        if folder:
            tmp.mkdir(parents=True)
        else:
            tmp.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if folder and target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        _remove(old)
