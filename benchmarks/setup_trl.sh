#!/usr/bin/env bash
# A separate venv for benchmarks/bench_grpo_trl.py: it sees ecr's .venv packages (a .pth file) and adds TRL,
# which is never a dependency of ecr itself. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
env=benchmarks/.venv-trl
if [ ! -x "$env/bin/python" ]; then
  .venv/bin/python -m venv "$env"
  site=$("$env/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # an `import` line, so the parent venv's own .pth files (ecr's editable install) are processed too
  parent=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "import site; site.addsitedir('$parent')" > "$site/ecr-venv.pth"
fi
"$env/bin/pip" install -q trl==1.16.0
"$env/bin/python" -c 'import trl, ecr; print("[setup_trl] ok: trl", trl.__version__)'
