"""Start-up cost of the `ecr` console script: wall time of each help text, in a fresh process.

Each command runs as a subprocess of the venv's `ecr` script (or `python -m ecr.cli` with `--module`), with
stdout/stderr discarded; the rows run interleaved (round-robin per repeat) after `--warmup` untimed rounds, so a
change of machine load hits all of them alike. The table gives the median, best and worst of `--repeat` runs
and which heavy stacks (lightning, torch, transformers) the command imports (one extra, untimed run each).
`ecr --help`, `ecr data --help` and `ecr label --help` should stay well under 1.5 s; `ecr fit --help` needs
Lightning and is the reference for a full import.

    .venv/bin/python benchmarks/bench_cli.py [--repeat 3] [--warmup 1] [--no-fit] [--module]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS: tuple[str, ...] = (
    "--help",
    "data --help",
    "label --help",
    "data synth --help",
    "data check --help",
    "model tiny --help",
    "export --help",
)
FIT = "fit --help"
HEAVY = ("lightning", "torch", "transformers")

# Runs `ecr.cli.main` in process and reports the heavy stacks it imported (a help text exits via SystemExit).
_PROBE = """
import json, sys
from ecr.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.__stdout__.write("\\nPROBE " + json.dumps([m for m in {heavy!r} if m in sys.modules]) + "\\n")
"""


def ecr_command(module: bool) -> list[str]:
    """The console script beside this interpreter (the venv's `ecr`), else `python -m ecr.cli`."""
    script = Path(sys.executable).with_name("ecr")
    if not module and script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "ecr.cli"]


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_once(argv: list[str]) -> tuple[float, int]:
    """(wall seconds, exit code) of one run."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(), check=False)
    return time.perf_counter() - t0, proc.returncode


def heavy_imports(args: list[str]) -> list[str]:
    code = _PROBE.format(heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env(), check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("PROBE "):
            return json.loads(line[len("PROBE ") :])
    return ["?"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per command (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (file cache, .pyc)")
    ap.add_argument("--no-fit", action="store_true", help="skip the `ecr fit --help` reference row")
    ap.add_argument("--module", action="store_true", help="time `python -m ecr.cli` instead of the script")
    args = ap.parse_args()

    base = ecr_command(args.module)
    commands = list(COMMANDS) + ([] if args.no_fit else [FIT])
    times: dict[str, list[float]] = {c: [] for c in commands}
    codes: dict[str, set[int]] = {c: set() for c in commands}
    for round_ in range(args.warmup + args.repeat):
        for c in commands:
            secs, code = run_once(base + c.split())
            codes[c].add(code)
            if round_ >= args.warmup:
                times[c].append(secs)
    heavy = {c: heavy_imports(c.split()) for c in commands}

    print(
        f"\n{' '.join(Path(a).name if i == 0 else a for i, a in enumerate(base))} COMMAND: wall time of"
        f" {args.repeat} run(s) after {args.warmup} warm-up round(s) ({os.cpu_count()} CPUs)"
    )
    width = max(len(c) for c in commands) + 4
    print(f"{'command':<{width}}  median s  best s  worst s  exit  heavy imports")
    for c in commands:
        ts = times[c]
        exits = ",".join(map(str, sorted(codes[c])))
        print(
            f"{'ecr ' + c:<{width}}  {statistics.median(ts):8.2f}  {min(ts):6.2f}  {max(ts):7.2f}  {exits:>4}"
            f"  {', '.join(heavy[c]) or '-'}"
        )


if __name__ == "__main__":
    main()
