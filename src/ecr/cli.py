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
is a user error too (`is_user_os_error`): one line naming the path and the OS's reason, exit code 2.

A run stopped by SIGTERM (Lightning finishes the current step, then stops) exits with 143, not 0, so a
scheduler does not take it for a finished run. `--ckpt_path last` resumes from the newest `last*.ckpt` of the
run's checkpoint folders, including those of earlier logger versions (`<save_dir>/<name>/version_*/checkpoints/`),
where Lightning itself looks only in the new version's (empty) folder and would silently start from scratch.

Importing this module is cheap: Lightning (and with it torch/transformers) is imported only when a Lightning
subcommand runs or `ECRCLI` is first accessed (a module `__getattr__` builds the class), and a utility command's
module only when that command runs. `ecr --help` and `ecr data --help` read the commands' one-line summaries
from the source files' docstrings (with `ast`), without importing them.
"""

from __future__ import annotations

import ast
import errno
import functools
import importlib
import importlib.util
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecr import quiet
from ecr.errors import ConfigError, ECRError
from ecr.extras import check_installed
from ecr.help_cache import print_help_cached, wants_help

if TYPE_CHECKING:
    from lightning.pytorch.cli import ArgsType, LightningCLI

    ECRCLI = LightningCLI  # the real class is built by `_ecrcli()` on first use

__all__ = [
    "DEBUG_ENV",
    "ECRCLI",
    "check_checkpoint_file",
    "strategy_needs_deepspeed",
    "EXTRA_COMMANDS",
    "LIGHTNING_COMMANDS",
    "cli_main",
    "configure_parsing",
    "find_last_checkpoint",
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

# the stage classes and DataModules: listed by `ecr fit --help`, addressable by short name (`--model SFTModule`)
STAGE_MODULES: tuple[str, ...] = (
    "ecr.modules.sft", "ecr.modules.erv", "ecr.modules.grpo", "ecr.modules.predict",
    "ecr.data.datamodule", "ecr.data.text", "ecr.data.sentences",
)  # fmt: skip


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

    for module in STAGE_MODULES:  # imported so that `--model GRPOModule` / `--model.help GRPOModule` resolve
        importlib.import_module(module)

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

        def instantiate_trainer(self, **kwargs: Any) -> Any:
            """The configured Trainer, writing checkpoints through `SafeCheckpointIO` unless a plugin was chosen."""
            from lightning.pytorch.plugins.io import TorchCheckpointIO

            from ecr.modules.checkpointing import SafeCheckpointIO

            trainer = super().instantiate_trainer(**kwargs)
            strategy = trainer.strategy
            if type(strategy.checkpoint_io) is TorchCheckpointIO and not type(strategy).__name__.startswith(
                "DeepSpeed"
            ):
                strategy.checkpoint_io = SafeCheckpointIO()
            return trainer

        def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
            """Lightning's, plus `ecr`'s progress bar unless the config names one; `ecr predict` logs nothing
            (its output is the predictions file), so it gets no logger folder."""
            from lightning.pytorch.callbacks import ProgressBar

            from ecr.callbacks import quiet_progress_bar

            configured = [*(config.get("callbacks") or []), *callbacks]
            if config.get("enable_progress_bar") is not False and not any(
                isinstance(c, ProgressBar) for c in configured
            ):
                callbacks = [*callbacks, quiet_progress_bar()]
            if self.subcommand == "predict":
                config["logger"] = False
            return super()._instantiate_trainer(config, callbacks)

        def before_instantiate_classes(self) -> None:
            """A DeepSpeed strategy without DeepSpeed installed: one line naming the extra, not Lightning's error."""
            sub = self.config.get("subcommand")
            trainer = (self.config[sub] if sub else self.config).get("trainer") or {}
            if strategy_needs_deepspeed(trainer.get("strategy")):
                check_installed("deepspeed", "trainer.strategy (DeepSpeed)")

        def parse_arguments(self, parser: Any, args: ArgsType) -> None:
            """Parse, then check a `--ckpt_path` file before Lightning unpickles it (a clear error, not an OSError)."""
            super().parse_arguments(parser, args)
            sub = self.config.get("subcommand")
            ckpt = self.config[sub].get("ckpt_path") if sub else None
            if ckpt and ckpt not in ("last", "best", "hpc") and "://" not in str(ckpt):
                check_checkpoint_file(Path(ckpt))

        def instantiate_classes(self) -> None:
            """Build the module and DataModule, then pair them: the module's collator becomes the DataModule's
            `collate_fn` (`ecr.modules.wiring.connect`)."""
            from ecr.modules.wiring import connect

            super().instantiate_classes()
            connect(self.model, self.datamodule)

        def before_fit(self) -> None:
            self._resolve_last("fit")

        def _resolve_last(self, subcommand: str) -> None:
            """`--ckpt_path last` -> the newest last checkpoint of this run's folders, earlier versions included."""
            config = self.config_init[subcommand]
            if config.get("ckpt_path") != "last":
                return
            found = find_last_checkpoint(_checkpoint_dirs(self.trainer))
            if found is None:
                print(
                    f"ecr {subcommand}: --ckpt_path last: no last checkpoint in {_checkpoint_dirs(self.trainer)}; "
                    "training starts from scratch",
                    file=sys.stderr,
                )
                config["ckpt_path"] = None
                return
            print(f"ecr {subcommand}: resuming from {found}", file=sys.stderr)
            config["ckpt_path"] = str(found)

    ECRCLI.__module__ = __name__
    ECRCLI.__qualname__ = "ECRCLI"
    return ECRCLI


def strategy_needs_deepspeed(strategy: Any) -> bool:
    """Whether a configured `trainer.strategy` (a name like "deepspeed_stage_2", a class_path namespace, or an
    instance) is one of Lightning's DeepSpeed strategies."""
    if strategy is None:
        return False
    if isinstance(strategy, str):
        return "deepspeed" in strategy.lower()
    class_path = strategy.get("class_path") if hasattr(strategy, "get") else None
    name = class_path if isinstance(class_path, str) else type(strategy).__name__
    return "deepspeed" in name.lower()


def _checkpoint_dirs(trainer: Any) -> list[Path]:
    """Where the trainer's ModelCheckpoints write: their `dirpath`, or every version of the logger's root."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    dirs: list[Path] = []
    for cb in trainer.checkpoint_callbacks:
        if not isinstance(cb, ModelCheckpoint):
            continue
        if cb.dirpath is not None:
            dirs.append(Path(cb.dirpath))
        elif trainer.loggers and getattr(trainer.loggers[0], "root_dir", None):
            dirs += sorted(Path(trainer.loggers[0].root_dir).glob("*/checkpoints"))
        else:
            dirs.append(Path(trainer.default_root_dir) / "checkpoints")
    return dirs


def check_checkpoint_file(path: Path) -> None:
    """A `--ckpt_path` must be a readable Lightning checkpoint; raises ConfigError naming it otherwise."""
    import torch

    if not path.is_file():
        raise ConfigError(f"--ckpt_path {path}: no such file")
    try:  # mmap: reads the index and the pickled structure, not the tensors
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - whatever the unpickler says, the file is unusable
        raise ConfigError(
            f"--ckpt_path {path}: not a readable checkpoint ({type(exc).__name__}: {str(exc)[:120]}); "
            "truncated by a full disk or a kill while saving? use an earlier one"
        ) from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(f"--ckpt_path {path}: not a Lightning checkpoint (no state_dict)")


def find_last_checkpoint(dirs: Iterable[Path]) -> Path | None:
    """Newest (by modification time) `last.ckpt` / `last-vN.ckpt` in `dirs`; None if there is none."""
    found = [p for d in dirs if d.is_dir() for p in d.glob("last*.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


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


# OSErrors about a path the user named (`is_user_os_error`); other OSErrors are bugs and keep their traceback
_USER_PATH_ERRORS = (PermissionError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError)
# errnos that are the machine's state, not a bug, whatever the path: a full disk / quota, a read-only file system
_USER_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS") if hasattr(errno, name))


def _command_line_paths(argv: Sequence[str]) -> list[str]:
    """Absolute forms of every command-line word that could be a path (`--opt=value` gives its value)."""
    out = []
    for arg in argv:
        value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
        if value and not value.startswith("-"):
            out.append(os.path.abspath(value))
    return out


def is_user_os_error(err: OSError, argv: Sequence[str]) -> bool:
    """Whether `err` is the user's to fix: a full disk or read-only file system (`ENOSPC`, `EDQUOT`, `EROFS`),
    or a missing/forbidden/wrong-kind path (`PermissionError`, `FileNotFoundError`, `NotADirectoryError`,
    `IsADirectoryError`, `FileExistsError`) that is, is inside, or is a folder above a path on the command line
    (`--out /proc/x` fails creating `/proc/x`; `--output /ro/dir/o.jsonl` fails creating `/ro/dir`).

    Any other OSError (a path the program chose itself, a socket, an OS bug) is not: it keeps its traceback.
    """
    if err.errno in _USER_ERRNOS:
        return True
    if not isinstance(err, _USER_PATH_ERRORS):
        return False
    named = _command_line_paths(argv)
    for filename in (err.filename, err.filename2):
        if filename is None or not isinstance(filename, (str, bytes, os.PathLike)):
            continue
        path = os.path.abspath(os.fsdecode(filename))
        for arg in named:
            if (
                path == arg
                or path.startswith(arg.rstrip(os.sep) + os.sep)
                or arg.startswith(path.rstrip(os.sep) + os.sep)
            ):
                return True
    return False


def os_error_message(err: OSError) -> str:
    """`"{path}: {OS reason}"` (both paths for a rename), or the OS reason alone when the error names no path."""
    reason = err.strerror or str(err)
    paths = [os.fsdecode(f) for f in (err.filename, err.filename2) if isinstance(f, (str, bytes, os.PathLike))]
    if not paths:
        return reason
    return f"{' -> '.join(paths)}: {reason}"


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
