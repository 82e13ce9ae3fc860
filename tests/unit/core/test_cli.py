from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from ecr.cli import EXTRA_COMMANDS, main

SRC = Path(__file__).resolve().parents[3] / "src" / "ecr"


def _targets() -> list[str]:
    out: list[str] = []
    for spec in EXTRA_COMMANDS.values():
        out.extend(spec.values() if isinstance(spec, dict) else [spec])
    return out


@pytest.mark.parametrize("target", _targets())
def test_registered_commands_exist_and_are_typed(target: str) -> None:
    module, _, name = target.partition(":")
    fn = getattr(importlib.import_module(module), name)
    assert callable(fn) and fn.__doc__, f"{target} needs a docstring (it becomes --help)"


def test_group_help_and_unknown_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["data", "--help"])
    assert exc.value.code == 0
    assert "synth" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["data", "nope"])
    assert exc.value.code == 2
    assert "unknown subcommand 'nope'" in capsys.readouterr().err


def test_no_hard_coded_machine_paths() -> None:
    bad = re.compile(r"['\"]/(mnt|home|root|data)/")
    hits = [
        f"{p}:{i}"
        for p in SRC.rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if bad.search(line)
    ]
    assert not hits, hits
