"""A cache for `ecr fit --help` (and validate/test/predict): the help is fixed by the code, so build it once.

Building LightningCLI's parser imports Lightning, torchmetrics, transformers and every stage class and walks the
Trainer's signature: 10-15 s on a laptop CPU for a text that only changes when the code, the installed packages,
the command line or a `--config` file change. The help is stored under the cache folder keyed by all of those
and wrapped at a fixed width, so the second `ecr fit --help` prints in well under a second; `scripts/setup.sh`
builds the plain `ecr fit --help` once. Set `ECR_CACHE` to move the folder (default `$XDG_CACHE_HOME/ecr`,
else `~/.cache/ecr`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

HELP_FLAGS = frozenset({"-h", "--help"})
HELP_WIDTH = 100
PACKAGES = ("ecr", "lightning", "jsonargparse", "torch", "transformers", "peft", "docstring-parser")


def cache_dir() -> Path:
    """Where `ecr` caches derived files: `$ECR_CACHE`, else `$XDG_CACHE_HOME/ecr`, else `~/.cache/ecr`."""
    if os.environ.get("ECR_CACHE"):
        return Path(os.environ["ECR_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ecr"


def wants_help(argv: Sequence[str]) -> bool:
    """Whether the command line asks for help (`--help`, `-h`, or a `--X.help CLASS` option)."""
    return any(a in HELP_FLAGS or (a.startswith("--") and a.split("=", 1)[0].endswith(".help")) for a in argv)


def _source_fingerprint() -> list[tuple[str, int, int]]:
    """(relative path, size, mtime in ns) of every Python file of the `ecr` package: a code edit changes the key."""
    root = Path(__file__).resolve().parent
    return sorted((str(p.relative_to(root)), s.st_size, s.st_mtime_ns) for p in root.rglob("*.py") for s in [p.stat()])


def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = ""
    return out


def _config_texts(argv: Sequence[str]) -> list[str]:
    """The contents of every `--config FILE` on the command line (a missing file: its name only)."""
    texts = []
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            name: str | None = argv[i + 1]
        else:
            name = arg[len("--config=") :] if arg.startswith("--config=") else None
        if name is not None:
            try:
                texts.append(Path(name).read_text(encoding="utf-8"))
            except OSError:
                texts.append(f"<unreadable {name}>")
    return texts


def help_key(argv: Sequence[str]) -> str:
    """The cache key of the help text `argv` prints (code, packages, arguments, configs)."""
    configs = _config_texts(argv)
    parts = {
        "argv": list(argv),
        "cwd": os.getcwd() if configs else "",  # a config's relative paths are printed as given
        "configs": configs,
        "source": _source_fingerprint(),
        "versions": _versions(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def print_help_cached(argv: Sequence[str], build: Callable[[], object]) -> None:
    """Print the help `build()` prints for `argv` (it exits with SystemExit 0, as argparse does), from the cache
    when present; otherwise run `build`, store what it printed and re-raise its exit. Errors are not cached;
    whatever `build` returns (it exits first) is ignored."""
    path = cache_dir() / "help" / f"{help_key(argv)}.txt"
    if path.is_file():
        print(path.read_text(encoding="utf-8"), end="")
        raise SystemExit(0)
    buffer = io.StringIO()
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_WIDTH)  # one text for every terminal (argparse wraps at COLUMNS - 2)
    try:
        with contextlib.redirect_stdout(buffer):
            build()
    except SystemExit as exc:
        print(buffer.getvalue(), end="")
        if exc.code in (0, None) and buffer.getvalue():
            with contextlib.suppress(OSError):  # a read-only home only loses the speed-up
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                tmp.write_text(buffer.getvalue(), encoding="utf-8")
                tmp.replace(path)
        raise
    finally:
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns
    print(buffer.getvalue(), end="")
