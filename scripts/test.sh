#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the default test suite: fast unit + integration tests on the CPU.
# Slow tests: add `-m slow`; GPU tests (tests/gpu) skip themselves without CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
