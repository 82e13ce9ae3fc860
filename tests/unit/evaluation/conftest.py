"""The judge-prompt chat server (`support.judge_server`: markers FAIL500xN, ALWAYS500, OFFLIST, SHOUT,
BROKENBODY; `deny_after`) as a fixture for the evaluation tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.judge_server import JudgeServer
from support.judge_server import judge_server as running_judge_server

KEY = "sk-judge-SECRET-0123456789"


@pytest.fixture
def judge_server() -> Iterator[JudgeServer]:
    with running_judge_server() as state:
        yield state
