"""The fault-injection suite: `faults.py` (imported by the tests and by the `ecr` subprocesses they start)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001
    """The fault-injection summary (kind of input -> outcome through each path) at the end of the run."""
    import faults

    lines = faults.summary_lines()
    if lines:
        terminalreporter.write_sep("=", "ecr fault-injection summary")
        for line in lines:
            terminalreporter.write_line(line)
