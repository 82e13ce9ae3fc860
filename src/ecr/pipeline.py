"""`ecr pipeline`: run a chain of ordinary `ecr` commands, skipping the ones whose outputs are up to date.

The embedded demo (`configs/demo/pipeline.yaml`, run by `scripts/demo.sh`) is such a chain: every stage is one
command a user could type (`ecr fit --config configs/demo/sft.yaml`), so any stage can be rerun alone.

A pipeline file is YAML: `stages:` a list of `{name, about, run, inputs, outputs, clean}` and optional
`summary: {metrics: {column: metrics.json, ...}, report: index.html}`.

Up-to-date rule (make-like, with a stamp per stage in `state_dir`): a stage is skipped when its stamp exists,
records the same command line, every declared output exists, and no input (files, or every file under an input
folder) is newer than the stamp. Inputs are the declared `inputs` plus every `--config` file of the command, so
editing a config reruns its stage; a rerun stage's outputs are newer than the stamps of the stages that read
them, so those rerun too. Before a stage runs, its `clean` paths (its own run folders) are removed, so logger
versions restart at version_0 and stale files never mix with new ones. A stage that fails stops the chain: its
own message is already on the terminal, the pipeline names the stage and exits with the stage's code; earlier
stages' outputs are kept (the next run resumes from the failed stage).

Stopping: SIGTERM/SIGINT to the pipeline are forwarded to the running stage, and the pipeline waits for it
(exit 128 + signal). While a stage runs, `state_dir/<stage>.lock` names the pipeline's and the stage's pids: a
second pipeline refuses to clean or run that stage while either is alive (a stage orphaned by a killed
pipeline included). Later stages address the checkpoint of the run they follow with its run folder
(`ecr export --checkpoint runs/x/tb`, `ecr.modules.checkpointing.resolve_checkpoint`), never `version_0`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ecr.errors import ConfigError

STAMP_SUFFIX = ".done"
LOCK_SUFFIX = ".lock"


@dataclass(frozen=True)
class Stage:
    """One command of a pipeline and the files that decide whether it must run again."""

    name: str
    run: str
    about: str = ""
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    clean: tuple[str, ...] = ()

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.run)

    def all_inputs(self) -> list[str]:
        """Declared inputs plus the command's `--config` files (editing a config reruns its stage)."""
        argv = self.argv
        configs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
        return [*self.inputs, *(c for c in configs if c not in self.inputs)]


@dataclass(frozen=True)
class Pipeline:
    """Stages in order, plus what the end-of-run summary shows."""

    stages: tuple[Stage, ...]
    metrics: dict[str, str] = field(default_factory=dict)
    report: str | None = None
    state_dir: str | None = None  # where stamps and locks live (`state_dir:` in the file; `--state_dir` wins)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a path or a list of paths, got {value!r}")
    return tuple(value)


def load_pipeline(path: str | Path) -> Pipeline:
    """Parse a pipeline YAML file; every problem names the file and the stage field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: pipeline file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("stages"), list) or not raw["stages"]:
        raise ConfigError(f"{path}: expected a mapping with a non-empty `stages:` list")
    stages: list[Stage] = []
    for i, entry in enumerate(raw["stages"]):
        where = f"{path}: stages[{i}]"
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("name", "run")):
            raise ConfigError(f"{where}: each stage needs a `name` and a `run` command (strings)")
        unknown = set(entry) - {"name", "about", "run", "inputs", "outputs", "clean"}
        if unknown:
            raise ConfigError(f"{where} ({entry['name']}): unknown field(s) {sorted(unknown)}")
        stage = Stage(
            name=entry["name"],
            run=entry["run"],
            about=str(entry.get("about", "")),
            inputs=_strings(entry.get("inputs"), f"{where}.inputs"),
            outputs=_strings(entry.get("outputs"), f"{where}.outputs"),
            clean=_strings(entry.get("clean"), f"{where}.clean"),
        )
        for p in stage.clean:
            if Path(p).is_absolute() or ".." in Path(p).parts or Path(p) == Path("."):
                raise ConfigError(f"{where}.clean: {p!r} must be a relative folder inside the working directory")
        stages.append(stage)
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: stage names must be unique, got {names}")
    summary = raw.get("summary") or {}
    if not isinstance(summary, dict):
        raise ConfigError(f"{path}: summary: expected a mapping")
    metrics = summary.get("metrics") or {}
    if not isinstance(metrics, dict):
        raise ConfigError(f"{path}: summary.metrics: expected {{column name: metrics.json}}")
    state_dir = raw.get("state_dir")
    if state_dir is not None and not isinstance(state_dir, str):
        raise ConfigError(f"{path}: state_dir: expected a folder path, got {state_dir!r}")
    return Pipeline(tuple(stages), {str(k): str(v) for k, v in metrics.items()}, summary.get("report"), state_dir)


def newest_mtime(paths: Iterable[str | Path]) -> float | None:
    """The newest modification time of the files among `paths` (folders: every file below); None if none."""
    newest: float | None = None
    for p in map(Path, paths):
        files = [p] if p.is_file() else (f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
        for f in files:
            m = f.stat().st_mtime
            newest = m if newest is None or m > newest else newest
    return newest


def stale_reason(stage: Stage, state_dir: Path) -> str | None:
    """Why `stage` must run (None: it is up to date)."""
    stamp = state_dir / f"{stage.name}{STAMP_SUFFIX}"
    if not stamp.is_file():
        return "never ran"
    if json.loads(stamp.read_text()).get("run") != stage.run:
        return "its command changed"
    missing = [o for o in stage.outputs if not Path(o).exists()]
    if missing:
        return f"output {missing[0]} is missing"
    missing_inputs = [i for i in stage.all_inputs() if not Path(i).exists()]
    if missing_inputs:
        return f"input {missing_inputs[0]} is missing"
    newest = newest_mtime(stage.all_inputs())
    if newest is not None and newest > stamp.stat().st_mtime:
        return "an input is newer than its last run"
    return None


def _command(argv: list[str]) -> list[str]:
    """`ecr ...` runs the `ecr` of this interpreter's environment (the venv), whatever is first on PATH."""
    if argv and argv[0] == "ecr":
        return [sys.executable, "-c", "from ecr.cli import main; main()", *argv[1:]]
    return argv


def _clean(paths: Sequence[str]) -> None:
    for p in map(Path, paths):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def summary_lines(pipeline: Pipeline, timings: Sequence[tuple[str, str, float]]) -> list[str]:
    """The end-of-run table: each stage with what happened and its time; then the metrics and the report."""
    width = max(len(n) for n, _, _ in timings)
    lines = ["", f"{'stage':<{width}}  {'status':<24} seconds"]
    lines += [f"{n:<{width}}  {s:<24} {t:7.1f}" for n, s, t in timings]
    rows, judges, secondary = [], set(), []
    for column, path in pipeline.metrics.items():
        if Path(path).is_file():
            m = json.loads(Path(path).read_text())
            rows.append((column, *(_fmt(m.get(k)) for k in ("war", "uar", "epc", "eea", "fcr"))))
            judges.add((m.get("judge") or {}).get("judge"))
            for name, rep in list((m.get("judges") or {}).items())[1:]:  # the other judges, as secondary columns
                secondary.append((f"{column} ({name})", *(_fmt(rep.get(k)) for k in ("epc", "eea", "fcr"))))
    if rows:
        judged = ", ".join(sorted(j for j in judges if j)) or "none"
        lines += ["", f"{'model':<12} {'WAR':>6} {'UAR':>6} {'EPC':>6} {'EEA':>6} {'FCR':>6}   (%; judge: {judged})"]
        lines += [f"{r[0]:<12} " + " ".join(f"{v:>6}" for v in r[1:]) for r in rows]
    if secondary:
        width2 = max(len(r[0]) for r in secondary)
        lines += ["", f"{'other judges':<{width2}} {'EPC':>6} {'EEA':>6} {'FCR':>6}"]
        lines += [f"{r[0]:<{width2}} " + " ".join(f"{v:>6}" for v in r[1:]) for r in secondary]
    if pipeline.report and Path(pipeline.report).is_file():
        lines += ["", f"report: {Path(pipeline.report).resolve()}"]
    return lines


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) writes nothing
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def take_lock(lock: Path, stage: str) -> Path:
    """Claim a stage's folders for this process; a live writer named by an existing lock is a `ConfigError`.

    The lock names the pipeline's pid and, once started, the stage's (`run_forwarding_signals`): a stage left
    running by a killed pipeline is still a live writer, and a rerun must not wipe its folder under it.
    """
    if lock.is_file():
        try:
            pids = [int(p) for p in json.loads(lock.read_text()).get("pids", [])]
        except (ValueError, TypeError, AttributeError):
            pids = []
        live = [p for p in pids if p != os.getpid() and _alive(p)]
        if live:
            raise ConfigError(
                f"stage {stage!r} is being run by process {live[-1]} (lock {lock}); wait for it or stop it "
                f"(kill {live[-1]}) before rerunning; delete the lock only if that process is not an ecr stage"
            )
    lock.write_text(json.dumps({"pids": [os.getpid()]}))
    return lock


def run_forwarding_signals(argv: list[str], lock: Path) -> tuple[int, signal.Signals | None]:
    """Run a stage; SIGTERM/SIGINT sent to the pipeline are forwarded to it and the pipeline waits for it.

    The stage runs in its own process group, so a terminal's Ctrl-C reaches it once (forwarded), not twice.
    Returns its exit code and the signal that stopped the pipeline (None: it ended by itself).
    """
    received: list[signal.Signals] = []
    proc = subprocess.Popen(argv, env=os.environ.copy(), start_new_session=True)
    lock.write_text(json.dumps({"pids": [os.getpid(), proc.pid]}))

    def forward(signum: int, frame: Any) -> None:
        received.append(signal.Signals(signum))
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code, (received[0] if received else None)


def run_pipeline(
    pipeline: Pipeline, *, state_dir: Path, force: Sequence[str] = (), dry_run: bool = False, until: str | None = None
) -> int:
    """Run the stale stages in order (up to and including `until`); returns 0, or the first failed stage's code."""
    names = [s.name for s in pipeline.stages]
    unknown = set(force) - set(names)
    if unknown:
        raise ConfigError(f"--force: unknown stage(s) {sorted(unknown)}; stages: {names}")
    if until is not None and until not in names:
        raise ConfigError(f"--until: unknown stage {until!r}; stages: {names}")
    stages = pipeline.stages[: names.index(until) + 1] if until is not None else pipeline.stages
    state_dir.mkdir(parents=True, exist_ok=True)
    timings: list[tuple[str, str, float]] = []
    n = len(stages)
    for k, stage in enumerate(stages, 1):
        reason = "forced" if stage.name in force else stale_reason(stage, state_dir)
        head = f"=== {k}/{n} {stage.name}" + (f": {stage.about}" if stage.about else "")
        if reason is None:
            print(f"{head}\n    up to date, skipped (outputs newer than inputs; --force {stage.name} reruns it)")
            timings.append((stage.name, "skipped (up to date)", 0.0))
            continue
        print(f"{head}\n    runs ({reason}): {stage.run}", flush=True)
        if dry_run:
            timings.append((stage.name, f"would run ({reason})", 0.0))
            continue
        stamp = state_dir / f"{stage.name}{STAMP_SUFFIX}"
        lock = take_lock(state_dir / f"{stage.name}{LOCK_SUFFIX}", stage.name)
        try:
            stamp.unlink(missing_ok=True)
            _clean(stage.clean)
            start = time.monotonic()
            code, stopped_by = run_forwarding_signals(_command(stage.argv), lock)
            seconds = time.monotonic() - start
        finally:
            lock.unlink(missing_ok=True)
        if stopped_by is not None:
            timings.append((stage.name, f"STOPPED ({stopped_by.name})", seconds))
            print("\n".join(summary_lines(pipeline, timings)))
            print(f"\necr pipeline: stopped by {stopped_by.name}; stage {stage.name!r} ended (exit {code}); "
                  "later stages were not run; rerun the pipeline to go on", file=sys.stderr)  # fmt: skip
            return 128 + int(stopped_by)
        if code != 0:
            timings.append((stage.name, f"FAILED (exit {code})", seconds))
            print("\n".join(summary_lines(pipeline, timings)))
            message = f"stage {stage.name!r} failed (exit {code}); later stages were not run"
            print(f"\necr pipeline: {message}", file=sys.stderr)
            return code
        missing = [o for o in stage.outputs if not Path(o).exists()]
        if missing:
            raise ConfigError(f"stage {stage.name!r} succeeded but did not write its declared output {missing[0]}")
        stamp.write_text(json.dumps({"run": stage.run, "seconds": round(seconds, 2)}))
        timings.append((stage.name, "ran", seconds))
    print("\n".join(summary_lines(pipeline, timings)))
    return 0


def pipeline_command(
    file: Path,
    force: list[str] | None = None,
    dry_run: bool = False,
    until: str | None = None,
    state_dir: Path | None = None,
) -> int:
    """Run a chain of ecr commands (e.g. the whole method on the demo), skipping stages that are up to date.

    Args:
        file: pipeline YAML (`stages:` name, run, inputs, outputs, clean; e.g. configs/demo/pipeline.yaml).
        force: stage names to rerun even when up to date (later stages that read their outputs rerun too).
        dry_run: only print which stages would run and why.
        until: stop after this stage (e.g. `--until sft`); later stages are left as they are.
        state_dir: where each finished stage's stamp is kept (default: the file's `state_dir:`, else runs/.pipeline).
    """
    pipeline = load_pipeline(file)
    state = state_dir or Path(pipeline.state_dir or "runs/.pipeline")
    return run_pipeline(pipeline, state_dir=state, force=force or (), dry_run=dry_run, until=until)
