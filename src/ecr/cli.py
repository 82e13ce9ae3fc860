"""The `ecr` command: LightningCLI for training stages plus a few data/model utility commands.

`ecr fit|validate|test|predict --config X.yaml` is a plain `LightningCLI` in subclass mode: the YAML picks the
LightningModule (`model.class_path`) and the DataModule (`data.class_path`), configs stack (`--config a.yaml
--config b.yaml`, last wins) and the resolved config is saved next to the logs.

Utility commands (`ecr data synth|check`, `ecr label`, `ecr model tiny`, `ecr export`) are ordinary typed
Python functions exposed through jsonargparse, so the CLI stays a thin layer over importable APIs.

Errors a user caused (`ecr.errors.ECRError`: a missing file, a bad field) print as one line naming the file or
field and exit with code 2; any other exception is a bug and keeps its traceback. `--debug` (anywhere on the
command line) or `ECR_DEBUG=1` shows the traceback of user errors too. An `OSError` about a path the user
named (a folder that cannot be created, no permission, a path of the wrong kind) or a full or read-only disk
is a user error too (`ecr.errors.is_user_os_error`): one line naming the path and the OS's reason, exit code 2.

A run stopped by SIGTERM (Lightning finishes the current step, then stops) exits with 143, not 0, so a
scheduler does not take it for a finished run. `--ckpt_path last` resumes from the newest `last*.ckpt` of the
run's checkpoint folders, including those of earlier logger versions (`<save_dir>/<name>/version_*/checkpoints/`),
where Lightning itself looks only in the new version's (empty) folder and would silently start from scratch.

Importing this module is cheap: Lightning (and with it torch/transformers) is imported only when a Lightning
subcommand runs or `ECRCLI` is first accessed (a module `__getattr__` imports `ecr.lightning_cli`), and a
utility command's module only when that command runs. `ecr --help` and `ecr data --help` read the commands'
one-line summaries from the source files' docstrings (with `ast`), without importing them.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecr import quiet
from ecr.errors import ConfigError, ECRError, is_user_os_error, os_error_message
from ecr.help_cache import print_help_cached, wants_help

if TYPE_CHECKING:
    from lightning.pytorch.cli import ArgsType, LightningCLI

    ECRCLI = LightningCLI  # the real class is built by `_ecrcli()` on first use

__all__ = [
    "DEBUG_ENV",
    "ECRCLI",
    "strategy_needs_deepspeed",
    "EXTRA_COMMANDS",
    "LIGHTNING_COMMANDS",
    "cli_main",
    "configure_parsing",
    "is_user_os_error",
    "main",
    "run_extra",
]

DEBUG_ENV = "ECR_DEBUG"  # ECR_DEBUG=1: tracebacks for user errors too

# command -> "module:function" or {subcommand: "module:function"}
EXTRA_COMMANDS: dict[str, str | dict[str, str]] = {
    "data": {"synth": "ecr.fixtures.synth:synth_command", "check": "ecr.data.check:check_command"},
    "label": "ecr.teachers.label:label_command",
    "explain": "ecr.teachers.explain:explain_command",
    "model": {
        "tiny": "ecr.fixtures.tiny_models:tiny_command",
        "info": "ecr.models.info:info_command",
        "check": "ecr.models.layout:check_command",
    },
    "export": "ecr.export:export_command",
    "score": "ecr.evaluation.score:score_command",
    "report": "ecr.evaluation.report:report_command",
    "pipeline": "ecr.pipeline:pipeline_command",
    "init": "ecr.project:init_command",
}

# commands whose leading bare arguments fill one option (`ecr score P.jsonl` = `ecr score --predictions P.jsonl`;
# a list option takes them all: `ecr report A.jsonl B.jsonl`); the option form keeps working
POSITIONAL: dict[str, tuple[str, bool]] = {
    "ecr score": ("predictions", False),
    "ecr report": ("predictions", True),
    "ecr model info": ("model", False),
    "ecr model check": ("path", False),
    "ecr pipeline": ("file", False),
}

# utility commands that read sections of stage configs: several `--config` files merge as `ecr fit` stacks them
STACKED_CONFIGS: frozenset[str] = frozenset({"ecr data check"})

# LightningCLI's subcommands (their help needs Lightning: `ecr fit --help`)
LIGHTNING_COMMANDS: dict[str, str] = {
    "fit": "train a stage: ecr fit --config configs/<stage>.yaml",
    "validate": "run the validation loop of a stage config (optionally --ckpt_path)",
    "test": "run the test loop (with a predict config: predictions + metrics.json + TensorBoard test/war ...)",
    "predict": "run the predict loop of a stage config (optionally --ckpt_path)",
}

_HELP = ("-h", "--help")


def configure_parsing() -> None:
    """jsonargparse settings of every `ecr` parser: dataclass field docstrings become `--help` text."""
    from jsonargparse import set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)


@functools.cache
def _ecrcli() -> type[LightningCLI]:
    """The `ECRCLI` class (`ecr.lightning_cli`); this is where Lightning is imported."""
    configure_parsing()
    from ecr.lightning_cli import ECRCLI

    return ECRCLI


def strategy_needs_deepspeed(strategy: Any) -> bool:
    """Whether a configured `trainer.strategy` names one of Lightning's DeepSpeed strategies (see
    `ecr.lightning_cli.strategy_needs_deepspeed`; kept importable here without Lightning)."""
    from ecr.lightning_cli import strategy_needs_deepspeed as needs

    return needs(strategy)


def __getattr__(name: str) -> Any:
    """PEP 562: `ecr.cli.ECRCLI` (and `from ecr.cli import ECRCLI`) builds the Lightning class on first access."""
    if name == "ECRCLI":
        return _ecrcli()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"ECRCLI"})


def _load(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def summary(target: str) -> str:
    """First docstring line of the function `target` ("module:function"), read from its source without importing it.

    Empty when the source cannot be found or parsed (e.g. a compiled-only install); the help text then just
    lists the command.
    """
    module, _, name = target.partition(":")
    try:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return ""
        with open(spec.origin, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=spec.origin)
    except (ImportError, OSError, SyntaxError, ValueError):
        return ""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            doc = ast.get_docstring(node) or ""
            return " ".join(doc.strip().split("\n\n")[0].split())  # the whole first paragraph, never cut
    return ""


def _table(rows: Sequence[tuple[str, str]], indent: str = "  ") -> list[str]:
    width = max(len(k) for k, _ in rows)
    return [f"{indent}{k:<{width}}  {v}".rstrip() for k, v in rows]


def _group_help(command: str, spec: dict[str, str]) -> str:
    lines = [f"usage: ecr {command} {{{','.join(spec)}}} [options]   (ecr {command} SUB --help)", ""]
    lines.append("subcommands:")
    lines += _table([(sub, summary(target)) for sub, target in spec.items()])
    return "\n".join(lines)


def help_text() -> str:
    """The text of `ecr --help` (no Lightning import; `ecr fit --help` shows LightningCLI's own options)."""
    lines = [
        "usage: ecr {fit,validate,test,predict} --config X.yaml [options]   (LightningCLI; ecr fit --help)",
        f"       ecr {{{','.join(EXTRA_COMMANDS)}}} ...   (utility commands; ecr COMMAND --help)",
        "",
        "Emotion recognition with explanations (ERV): training stages and data/model utilities.",
        "",
        "Lightning subcommands (fit|validate|test|predict; configs stack, --print_config prints the resolved one):",
    ]
    lines += _table(list(LIGHTNING_COMMANDS.items()))
    lines += ["", "utility commands:"]
    rows: list[tuple[str, str]] = []
    for command, spec in EXTRA_COMMANDS.items():
        if isinstance(spec, str):
            rows.append((command, summary(spec)))
        else:
            rows += [(f"{command} {sub}", summary(target)) for sub, target in spec.items()]
    lines += _table(rows)
    return "\n".join(lines)


def _underscore_option(arg: str) -> str:
    """`--num-clips=3` -> `--num_clips=3`: jsonargparse only knows the parameter names (with underscores)."""
    if not arg.startswith("--"):
        return arg
    name, eq, value = arg.partition("=")
    return "--" + name[2:].replace("-", "_") + eq + value


def _positional_to_option(prog: str, rest: list[str]) -> list[str]:
    """Leading bare arguments of a POSITIONAL command become its option (a list option takes them all)."""
    if prog not in POSITIONAL:
        return rest
    n = next((i for i, a in enumerate(rest) if a.startswith("-")), len(rest))
    if n == 0:
        return rest
    option, is_list = POSITIONAL[prog]
    if n > 1 and not is_list:
        raise ConfigError(f"{prog}: takes one bare argument (its --{option}), got {n}: {rest[:n]}")
    value = "[" + ", ".join(json.dumps(a) for a in rest[:n]) + "]" if is_list else rest[0]
    return [f"--{option}", value, *rest[n:]]


def merge_config(base: Any, override: Any) -> Any:
    """`override` stacked on `base` as `ecr fit` stacks configs: mappings merge key by key (so a second config's
    `data: {init_args: {root: X}}` changes only the root), a mapping naming another `class_path` replaces the
    section, and any other value replaces."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return override
    short = [str(d["class_path"]).rsplit(".", 1)[-1] for d in (base, override) if "class_path" in d]
    if len(short) == 2 and short[0] != short[1]:
        return override
    return {**base, **{k: merge_config(base[k], v) if k in base else v for k, v in override.items()}}


def _stack_configs(prog: str, rest: list[str]) -> list[str]:
    """Several `--config FILE` of a STACKED_CONFIGS command -> one merged `--config` (JSON) ahead of the options.

    jsonargparse would let the last file's `data:` replace the first's whole section (a plain dict parameter).
    """
    files: list[str] = []
    others: list[str] = []
    i = 0
    while i < len(rest):
        if rest[i] == "--config" and i + 1 < len(rest):
            files.append(rest[i + 1])
            i += 2
            continue
        if rest[i].startswith("--config="):
            files.append(rest[i].split("=", 1)[1])
        else:
            others.append(rest[i])
        i += 1
    if prog not in STACKED_CONFIGS or len(files) < 2:
        return rest
    import yaml

    merged: dict[str, Any] = {}
    for name in files:
        try:
            loaded = yaml.safe_load(Path(name).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"--config {name}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {name}: expected a mapping of sections, got {type(loaded).__name__}")
        merged = merge_config(merged, loaded)
    return ["--config", json.dumps(merged), *others]


def run_extra(argv: Sequence[str]) -> Any:
    """Run a utility command (`argv[0]` in EXTRA_COMMANDS) through jsonargparse and return its result."""
    spec = EXTRA_COMMANDS[argv[0]]
    rest = [_underscore_option(a) for a in argv[1:]]
    if isinstance(spec, dict):
        if not rest or rest[0] in _HELP:
            print(_group_help(argv[0], spec), file=sys.stdout if rest else sys.stderr)
            return 0 if rest else 2
        if rest[0] not in spec:
            print(f"ecr {argv[0]}: unknown subcommand {rest[0]!r}; choose one of {sorted(spec)}", file=sys.stderr)
            return 2
        target, prog, rest = spec[rest[0]], f"ecr {argv[0]} {rest[0]}", rest[1:]
    else:
        target, prog = spec, f"ecr {argv[0]}"
    rest = _stack_configs(prog, _positional_to_option(prog, rest))
    from jsonargparse import CLI

    configure_parsing()
    return CLI(_load(target), args=rest, prog=prog, as_positional=False)


def cli_main(args: ArgsType = None, run: bool = True) -> LightningCLI:
    """Entry point for the Lightning subcommands; tests and notebooks call it with a list or dict of args."""
    return _ecrcli()(args=args, run=run)


def main(argv: Sequence[str] | None = None) -> None:
    """The `ecr` console script. `argv=None` reads the process's command line.

    Exits (SystemExit) with the utility command's integer result; `ecr --help` exits 0 and a bare `ecr` 2
    after printing the command list, both without importing Lightning.
    """
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet.install()
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")
    if "--debug" in argv:
        argv = [a for a in argv if a != "--debug"]
        if from_command_line:
            sys.argv = [sys.argv[0], *argv]
    try:
        _dispatch(argv, from_command_line)
    except ECRError as err:
        if debug:
            raise
        sys.exit(report_user_error(err, argv[0] if argv else ""))
    except OSError as err:
        if debug or not is_user_os_error(err, argv):
            raise
        sys.exit(report_user_error(err, argv[0] if argv else ""))
    except SystemExit as exc:
        if type(exc).__name__ != "SIGTERMException":  # Lightning's: a SystemExit whose code is None (= 0)
            raise
        print(
            "ecr: stopped by SIGTERM after the current step; resume with --ckpt_path last (exit code 143)",
            file=sys.stderr,
        )
        sys.exit(128 + signal.SIGTERM)


def report_user_error(err: ECRError | OSError, command: str) -> int:
    """Print an error the user caused as one line (+ how to see the traceback); the exit code (2)."""
    prog = f"ecr {command}".strip() if command in EXTRA_COMMANDS or command in LIGHTNING_COMMANDS else "ecr"
    text = str(err) if isinstance(err, ECRError) else os_error_message(err)
    print(f"{prog}: error: {type(err).__name__}: {text}", file=sys.stderr)
    print(f"{prog}: (a traceback: add --debug or set {DEBUG_ENV}=1)", file=sys.stderr)
    return 2


def _dispatch(argv: list[str], from_command_line: bool) -> None:
    if argv and argv[0] in EXTRA_COMMANDS:
        result = run_extra(argv)
        if isinstance(result, int) and not isinstance(result, bool):
            sys.exit(result)
        return
    if not argv or argv[0] in _HELP:
        print(help_text(), file=sys.stdout if argv else sys.stderr)
        sys.exit(0 if argv else 2)
    # From the command line LightningCLI reads sys.argv itself (passing it again makes it warn).
    args = None if from_command_line else argv
    if argv[0] in LIGHTNING_COMMANDS and wants_help(argv[1:]):
        print_help_cached(argv, lambda: cli_main(args))
        return
    cli_main(args)


if __name__ == "__main__":
    main()
