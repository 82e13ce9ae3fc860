"""The `ecr` command: LightningCLI for training stages plus a few data/model utility commands.

`ecr fit|validate|test|predict --config X.yaml` is a plain `LightningCLI` in subclass mode: the YAML picks the
LightningModule (`model.class_path`) and the DataModule (`data.class_path`), configs stack (`--config a.yaml
--config b.yaml`, last wins) and the resolved config is saved next to the logs.

Utility commands (`ecr data synth|check`, `ecr label`, `ecr model tiny`, `ecr export`) are ordinary typed
Python functions exposed through jsonargparse, so the CLI stays a thin layer over importable APIs.

Importing this module is cheap: Lightning (and with it torch/transformers) is imported only when a Lightning
subcommand runs or `ECRCLI` is first accessed (a module `__getattr__` builds the class), and a utility command's
module only when that command runs. `ecr --help` and `ecr data --help` read the commands' one-line summaries
from the source files' docstrings (with `ast`), without importing them.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning.pytorch.cli import ArgsType, LightningCLI

    ECRCLI = LightningCLI  # the real class is built by `_ecrcli()` on first use

__all__ = ["ECRCLI", "EXTRA_COMMANDS", "LIGHTNING_COMMANDS", "cli_main", "configure_parsing", "main", "run_extra"]

# command -> "module:function" or {subcommand: "module:function"}
EXTRA_COMMANDS: dict[str, str | dict[str, str]] = {
    "data": {"synth": "ecr.fixtures.synth:synth_command", "check": "ecr.data.check:check_command"},
    "label": "ecr.teachers.label:label_command",
    "model": {"tiny": "ecr.fixtures.tiny_models:tiny_command"},
    "export": "ecr.export:export_command",
}

# LightningCLI's subcommands (their help needs Lightning: `ecr fit --help`)
LIGHTNING_COMMANDS: dict[str, str] = {
    "fit": "train a stage: ecr fit --config configs/<stage>.yaml",
    "validate": "run the validation loop of a stage config (optionally --ckpt_path)",
    "test": "run the test loop of a stage config (optionally --ckpt_path)",
    "predict": "run the predict loop of a stage config (optionally --ckpt_path)",
}

_HELP = ("-h", "--help")


def configure_parsing() -> None:
    """jsonargparse settings of every `ecr` parser: dataclass field docstrings become `--help` text."""
    from jsonargparse import set_parsing_settings

    set_parsing_settings(docstring_parse_attribute_docstrings=True)


@functools.cache
def _ecrcli() -> type[LightningCLI]:
    """Build (once) the `ECRCLI` class; this is where Lightning is imported."""
    from lightning.pytorch import LightningDataModule, LightningModule

    configure_parsing()
    from lightning.pytorch.cli import LightningCLI

    class ECRCLI(LightningCLI):
        """LightningCLI with `ecr` defaults: subclass mode for model and data, config saved (overwriting) per run."""

        def __init__(self, args: ArgsType = None, run: bool = True, **kwargs: Any) -> None:
            kwargs.setdefault("save_config_kwargs", {"overwrite": True})
            kwargs.setdefault("parser_kwargs", {"parser_mode": "omegaconf"} if _has_omegaconf() else {})
            super().__init__(
                LightningModule,
                LightningDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                args=args,
                run=run,
                **kwargs,
            )

    ECRCLI.__module__ = __name__
    ECRCLI.__qualname__ = "ECRCLI"
    return ECRCLI


def __getattr__(name: str) -> Any:
    """PEP 562: `ecr.cli.ECRCLI` (and `from ecr.cli import ECRCLI`) builds the Lightning class on first access."""
    if name == "ECRCLI":
        return _ecrcli()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"ECRCLI"})


def _has_omegaconf() -> bool:
    return importlib.util.find_spec("omegaconf") is not None


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
            return doc.strip().splitlines()[0] if doc.strip() else ""
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
    if argv and argv[0] in EXTRA_COMMANDS:
        result = run_extra(argv)
        if isinstance(result, int) and not isinstance(result, bool):
            sys.exit(result)
        return
    if not argv or argv[0] in _HELP:
        print(help_text(), file=sys.stdout if argv else sys.stderr)
        sys.exit(0 if argv else 2)
    # From the command line LightningCLI reads sys.argv itself (passing it again makes it warn).
    cli_main(None if from_command_line else argv)


if __name__ == "__main__":
    main()
