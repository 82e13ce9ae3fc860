"""Fixtures of the fit tests: the tiny Qwen2.5-Omni thinker every policy fit starts from (built once per module)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.tiny import tiny_omni


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_omni(tmp_path_factory.mktemp("tiny"))
