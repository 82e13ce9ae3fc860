"""The code base stays lint-clean and formatted (ruff settings in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
RUFF = [sys.executable, "-m", "ruff"]
PATHS = ["src", "tests", "benchmarks"]


def test_ruff_check() -> None:
    out = subprocess.run([*RUFF, "check", *PATHS], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format() -> None:
    out = subprocess.run([*RUFF, "format", "--check", *PATHS], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
