#!/usr/bin/env bash
# Sets up ecr on a fresh Debian/Ubuntu machine: the system FFmpeg libraries torchcodec needs, and a venv
# (.venv) with ecr, every extra, the dev tools and the docs site's tools at the exact tested versions of requirements/lock.txt
# (docs/install.md). An existing venv is reused only if it was built from the current pyproject.toml and lock
# (their hash is stamped inside the venv); otherwise it is rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so'; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "[setup] installing ffmpeg (system libraries for torchcodec)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ffmpeg >/dev/null
fi

stamp=.venv/.ecr-pyproject.sha256
want=$(cat pyproject.toml requirements/lock.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] building .venv from requirements/lock.txt (about 2 minutes)"
  rm -rf .venv
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -c requirements/lock.txt -e '.[all,dev,docs]'
  .venv/bin/pip check
  echo "$want" > "$stamp"
else
  # the package itself is installed in editable mode; make sure it is (cheap no-op when it is)
  .venv/bin/python -c 'import ecr' 2>/dev/null || .venv/bin/pip install -q --no-deps -e .
fi
echo "[setup] ok: $(.venv/bin/python -c 'import torch, torchcodec, transformers, lightning; print("torch", torch.__version__, "| torchcodec", torchcodec.__version__, "| transformers", transformers.__version__, "| lightning", lightning.__version__)')"
# `ecr fit --help` builds Lightning's whole parser (10-15 s); build it once here, later calls read the cache
.venv/bin/ecr fit --help > /dev/null
