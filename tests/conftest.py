"""Test-wide settings: offline hub, deterministic seeds, few threads (CI and dev machines have 2 cores)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402

TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:  # `import support` (tests/support: shared fake servers and tiny-model recipes)
    sys.path.insert(0, TESTS)


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    import random

    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
