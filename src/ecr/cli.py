"""The `ecr` command: LightningCLI for training stages plus a few data/model utility commands.

`ecr fit|validate|test|predict --config X.yaml` is a plain `LightningCLI` in subclass mode: the YAML picks the
LightningModule (`model.class_path`) and the DataModule (`data.class_path`), configs stack (`--config a.yaml
--config b.yaml`, last wins) and the resolved config is saved next to the logs.

Utility commands (`ecr data synth|check`, `ecr label`, `ecr model tiny`, `ecr export`) are ordinary typed
Python functions exposed through jsonargparse, so the CLI stays a thin layer over importable APIs. They are
imported lazily so `ecr --help` does not import every stack.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import ArgsType, LightningCLI

# command -> "module:function" or {subcommand: "module:function"}
EXTRA_COMMANDS: dict[str, str | dict[str, str]] = {
    "data": {"synth": "ecr.fixtures.synth:synth_command", "check": "ecr.data.check:check_command"},
    "label": "ecr.teachers.label:label_command",
    "model": {"tiny": "ecr.fixtures.tiny_models:tiny_command"},
    "export": "ecr.export:export_command",
}


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


def _has_omegaconf() -> bool:
    return importlib.util.find_spec("omegaconf") is not None


def _load(target: str) -> Callable[..., Any]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _underscore_option(arg: str) -> str:
    """`--num-clips=3` -> `--num_clips=3`: jsonargparse only knows the parameter names (with underscores)."""
    if not arg.startswith("--"):
        return arg
    name, eq, value = arg.partition("=")
    return "--" + name[2:].replace("-", "_") + eq + value


def run_extra(argv: Sequence[str]) -> Any:
    """Run a utility command (`argv[0]` in EXTRA_COMMANDS) through jsonargparse and return its result."""
    from jsonargparse import CLI

    spec = EXTRA_COMMANDS[argv[0]]
    rest = [_underscore_option(a) for a in argv[1:]]
    if isinstance(spec, str):
        return CLI(_load(spec), args=rest, prog=f"ecr {argv[0]}", as_positional=False)
    if not rest or rest[0] in ("-h", "--help"):
        print(f"usage: ecr {argv[0]} {{{','.join(spec)}}} [options]   (ecr {argv[0]} SUB --help)")
        return 0 if rest else 2
    if rest[0] not in spec:
        print(f"ecr {argv[0]}: unknown subcommand {rest[0]!r}; choose one of {sorted(spec)}", file=sys.stderr)
        return 2
    return CLI(_load(spec[rest[0]]), args=rest[1:], prog=f"ecr {argv[0]} {rest[0]}", as_positional=False)


def cli_main(args: ArgsType = None, run: bool = True) -> ECRCLI:
    """Entry point for the Lightning subcommands; tests and notebooks call it with a list or dict of args."""
    return ECRCLI(args=args, run=run)


def main(argv: Sequence[str] | None = None) -> None:
    """The `ecr` console script. `argv=None` reads the process's command line."""
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in EXTRA_COMMANDS:
        result = run_extra(argv)
        if isinstance(result, int) and not isinstance(result, bool):
            sys.exit(result)
        return
    if not argv or argv[0] in ("-h", "--help"):
        print("ecr: fit|validate|test|predict --config X.yaml  (LightningCLI)")
        print("     " + " | ".join(f"{k} ..." for k in EXTRA_COMMANDS) + "  (utility commands)")
    # From the command line LightningCLI reads sys.argv itself (passing it again makes it warn).
    cli_main(None if from_command_line else argv)


if __name__ == "__main__":
    main()
