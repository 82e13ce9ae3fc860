#!/usr/bin/env bash
# CI's lower-bound leg: a fresh venv (.venv-lower) with the lowest supported versions (requirements/lower.txt,
# the GPU image's torch 2.11 / lightning 2.6.6 stack) runs the fast unit tests, so pyproject.toml's lower
# bounds are tested, not hoped. Prints the install and test times. Usage: .ci/lower_bound.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-lower
t0=$SECONDS
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -c requirements/lower.txt -e '.[all,dev]'
"$venv/bin/pip" check
t1=$SECONDS
echo "[lower-bound] installed in $((t1 - t0)) s: $("$venv/bin/python" -c 'import torch, transformers, lightning, numpy; print("torch", torch.__version__, "| transformers", transformers.__version__, "| lightning", lightning.__version__, "| numpy", numpy.__version__)')"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$venv/bin/python" -m pytest tests/unit -p no:cacheprovider "$@"
echo "[lower-bound] unit tests in $((SECONDS - t1)) s"
