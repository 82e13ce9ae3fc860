#!/usr/bin/env bash
# Sets up (scripts/setup.sh), builds the documentation site strictly, type-checks src/ecr (mypy) and runs the
# default test suite: fast unit + integration tests on the CPU.
# Slow tests: add `-m slow`; GPU tests (tests/gpu) skip themselves without CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# The documentation site first (mkdocs.yml): --strict turns a broken link, anchor, include or API reference into a
# failure. Built into a temporary folder; its log is shown only when it fails.
site=$(mktemp -d)
if ! NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$site/site" >"$site/log" 2>&1; then
  grep -v '^INFO' "$site/log" >&2
  echo "[test] mkdocs build --strict failed (docs/, mkdocs.yml, docstrings)" >&2
  rm -rf "$site"
  exit 1
fi
rm -rf "$site"
echo "[test] docs: mkdocs build --strict ok"
# Static types ([tool.mypy] in pyproject.toml: src/ecr, every function annotated); its report only on failure.
if ! types=$(.venv/bin/mypy 2>&1); then
  echo "$types" >&2
  echo "[test] mypy found type errors in src/ecr" >&2
  exit 1
fi
echo "[test] types: mypy ok"
exec .venv/bin/python -m pytest "$@"
