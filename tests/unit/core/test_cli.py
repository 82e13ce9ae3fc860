from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ecr.cli import EXTRA_COMMANDS, LIGHTNING_COMMANDS, help_text, main, summary
from ecr.errors import ConfigError

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


# --- help texts in a fresh process: right text, exit 0, and no heavy stack imported -------------------------

HEAVY = ("lightning", "torch", "transformers")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _ecr(*args: str) -> subprocess.CompletedProcess[str]:
    """The console entry (`python -m ecr.cli`, what the `ecr` script calls) in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "ecr.cli", *args], capture_output=True, text=True, env=ENV, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--help"], ["usage: ecr", "fit", "validate", "data synth", "data check", "label", "model tiny", "export"]),
        (["-h"], ["usage: ecr", "fit"]),
        (["data", "--help"], ["usage: ecr data {synth,check}", "synth", "check", "Write a synthetic"]),
        (["model", "--help"], ["usage: ecr model {tiny,info,check}", "tiny", "info", "check"]),
        (["label", "--help"], ["usage: ecr label", "--input", "--output", "--teacher", "Pseudo-label"]),
    ],
)
def test_help_in_subprocess(args: list[str], expected: list[str]) -> None:
    proc = _ecr(*args)
    assert proc.returncode == 0, proc.stderr
    for text in expected:
        assert text in proc.stdout, (text, proc.stdout)


def test_bare_ecr_prints_commands_and_exits_2() -> None:
    proc = _ecr()
    assert proc.returncode == 2
    assert "usage: ecr" in proc.stderr and "data synth" in proc.stderr


_PROBE = """
import json, sys
from ecr.cli import main
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as exc:
    code = exc.code
sys.__stdout__.write("\\nPROBE " + json.dumps({"code": code, "heavy": [m for m in HEAVY if m in sys.modules]}))
"""


@pytest.mark.parametrize("args", [["--help"], ["data", "--help"], ["label", "--help"]])
def test_help_does_not_import_heavy_stacks(args: list[str]) -> None:
    code = f"HEAVY = {HEAVY!r}\n" + _PROBE
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=ENV, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    probe = json.loads(proc.stdout.rsplit("PROBE ", 1)[1])
    assert probe["code"] == 0, proc.stdout
    assert probe["heavy"] == [], f"`ecr {' '.join(args)}` imported {probe['heavy']}"


def test_importing_cli_is_light() -> None:
    code = (
        "import sys, ecr.cli, ecr.models; from ecr.cli import EXTRA_COMMANDS, cli_main, main, run_extra; "
        "from ecr.models import PolicyConfig; "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


def test_help_lists_every_command_with_its_docstring() -> None:
    text = help_text()
    for name in LIGHTNING_COMMANDS:
        assert f"  {name} " in text
    for target in _targets():
        module, _, name = target.partition(":")
        doc = getattr(importlib.import_module(module), name).__doc__
        assert summary(target) == " ".join(doc.strip().split("\n\n")[0].split())  # the first paragraph
        assert summary(target) in text and summary(target).endswith((".", ")")), target  # never cut mid-sentence
    assert summary("ecr.nope:missing") == ""
    assert summary("ecr.cli:missing") == ""


def test_ecrcli_is_built_lazily_and_once() -> None:
    from lightning.pytorch.cli import LightningCLI

    import ecr.cli

    cls = ecr.cli.ECRCLI
    assert issubclass(cls, LightningCLI) and cls is ecr.cli.ECRCLI
    assert cls.__module__ == "ecr.lightning_cli" and cls.__qualname__ == "ECRCLI"  # importable by its path
    assert "ECRCLI" in dir(ecr.cli)
    with pytest.raises(AttributeError):
        ecr.cli.nope  # noqa: B018


def test_which_os_errors_are_the_users(tmp_path: Path) -> None:
    import errno

    from ecr.cli import is_user_os_error, os_error_message

    out = str(tmp_path / "out")
    argv = ["model", "tiny", f"--out={out}"]
    assert is_user_os_error(FileNotFoundError(errno.ENOENT, "No such file", out), argv)
    assert is_user_os_error(NotADirectoryError(errno.ENOTDIR, "Not a dir", str(tmp_path)), argv)  # a folder above
    assert is_user_os_error(PermissionError(errno.EACCES, "Denied", os.path.join(out, "w.bin")), argv)  # inside
    assert is_user_os_error(OSError(errno.ENOSPC, "No space left on device"), argv)  # the disk, whatever the path
    assert is_user_os_error(OSError(errno.EROFS, "Read-only file system", "/elsewhere"), argv)
    assert not is_user_os_error(FileNotFoundError(errno.ENOENT, "No such file", "/opt/lib/data.bin"), argv)
    assert not is_user_os_error(FileNotFoundError(errno.ENOENT, "No such file"), argv)  # names no path
    assert not is_user_os_error(ConnectionResetError(errno.ECONNRESET, "reset"), argv)
    assert os_error_message(FileNotFoundError(errno.ENOENT, "No such file", out)) == f"{out}: No such file"
    assert os_error_message(OSError(errno.ENOSPC, "No space left on device")) == "No space left on device"


def test_a_full_disk_while_writing_is_a_short_user_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno

    import ecr.cli

    def full_disk(argv: list[str]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ecr.cli, "run_extra", full_disk)
    monkeypatch.delenv("ECR_DEBUG", raising=False)
    with pytest.raises(SystemExit) as info:
        main(["model", "tiny", "--out", "x"])
    assert info.value.code == 2
    assert "ecr model: error: OSError: No space left on device" in capsys.readouterr().err
    with pytest.raises(OSError, match="No space left"):
        main(["model", "tiny", "--out", "x", "--debug"])


def test_leading_bare_arguments_fill_the_commands_main_option() -> None:
    from ecr.cli import POSITIONAL, _positional_to_option

    assert _positional_to_option("ecr score", ["p.jsonl", "--labels", "dfew"]) == [
        "--predictions",
        "p.jsonl",
        "--labels",
        "dfew",
    ]
    assert _positional_to_option("ecr report", ["a.jsonl", "b c.jsonl", "--out", "r"]) == [
        "--predictions",
        '["a.jsonl", "b c.jsonl"]',
        "--out",
        "r",
    ]
    options = ["--predictions", "p.jsonl", "--labels", "dfew"]
    assert _positional_to_option("ecr score", options) == options  # the option form is unchanged
    assert _positional_to_option("ecr label", ["x"]) == ["x"]  # not a POSITIONAL command
    with pytest.raises(ConfigError, match="takes one bare argument"):
        _positional_to_option("ecr score", ["a.jsonl", "b.jsonl"])
    assert set(POSITIONAL) <= {f"ecr {c}" for c in EXTRA_COMMANDS} | {
        f"ecr {c} {s}" for c, sub in EXTRA_COMMANDS.items() if isinstance(sub, dict) for s in sub
    }
