"""The code base stays lint-clean and formatted (ruff settings in pyproject.toml), and its type check (mypy, run by
scripts/test.sh) switches nothing off wholesale and gains no `# type: ignore`."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections import Counter
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


# The `# type: ignore` comments src/ecr may hold, per file (a file may go below its count, never above):
# a DataLoader whose __iter__ is a generator (a deliberate override of torch's iterator type), and two left
# to the files being rewritten under #20 (modules/grpo.py, rl/rewards.py).
ALLOWED_TYPE_IGNORES = {
    "src/ecr/data/loader.py": 1,
}


def test_the_type_check_switches_nothing_off_wholesale() -> None:
    """[tool.mypy]: every function annotated and checked; an untyped third-party module is named on its own."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert cfg["files"] == ["src/ecr"] and cfg["check_untyped_defs"] and cfg["disallow_untyped_defs"]
    assert cfg["warn_unused_ignores"], "a stale ignore must fail the check"
    blanket = {"ignore_missing_imports", "ignore_errors", "disable_error_code", "follow_imports", "exclude"}
    assert not blanket & set(cfg), f"[tool.mypy] switches off {sorted(blanket & set(cfg))} for everything"
    for override in cfg.get("overrides", []):
        modules = [override["module"]] if isinstance(override["module"], str) else override["module"]
        assert set(override) == {"module", "ignore_missing_imports"}, override
        assert not any("*" in m or m.split(".")[0] == "ecr" for m in modules), override


def test_no_new_type_ignores() -> None:
    found = Counter(
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "src" / "ecr").rglob("*.py"))
        for line in path.read_text().splitlines()
        if re.search(r"#\s*type:\s*ignore", line)
    )
    over = {f: n for f, n in found.items() if n > ALLOWED_TYPE_IGNORES.get(f, 0)}
    assert not over, f"new `# type: ignore` comments (fix the types instead): {over}"
