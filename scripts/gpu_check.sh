#!/usr/bin/env bash
# ecr's GPU check, for a machine with a CUDA GPU and torch already installed and NO network (docs/install.md).
# It builds a venv on top of the machine's own packages (--system-site-packages: its torch/CUDA stay), installs
# the wheelhouse that scripts/gpu_wheelhouse.sh built beforehand on a networked machine (what the image lacks)
# and ecr itself without dependencies, runs tests/gpu/ and prints one table:
#   bf16 / 8-bit / 4-bit SFT and GRPO steps, DeepSpeed ZeRO-2/3 steps, encode-once / shared-prefill / shared-
#   prefix / scorer = sampler exactness in fp32 and bf16, GRPO peak memory (adapter-disabled reference vs copy),
#   and benchmarks/bench_grpo.py on a random model of Qwen2.5-Omni-3B's LM shape.
#   scripts/gpu_check.sh [--wheelhouse DIR] [--out DIR] [--no-bench] [--no-venv]
# PYTHON picks the machine's interpreter (default python3); --no-venv installs into its environment directly
# (e.g. a venv that stands in for the image).
# Without CUDA the GPU tests skip (ECR_GPU_TESTS_ON_CPU=1 runs the CPU-capable ones) and the benchmark is left out.
set -euo pipefail
cd "$(dirname "$0")/.."
WH=wheelhouse OUT=${OUT:-gpu_check_out} BENCH=1 VENV=1
while [ $# -gt 0 ]; do
  case "$1" in
    --wheelhouse) WH=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-bench) BENCH=0; shift ;;
    --no-venv) VENV=0; shift ;;
    *) echo "gpu_check.sh: unknown option $1 (options: --wheelhouse DIR, --out DIR, --no-bench, --no-venv)" >&2
       exit 2 ;;
  esac
done
if [ ! -d "$WH" ]; then
  echo "gpu_check.sh: no wheelhouse at $WH: build it where there is network (scripts/gpu_wheelhouse.sh) and carry it" >&2
  exit 2
fi
mkdir -p "$OUT"
t0=$SECONDS
PY=${PYTHON:-python3}
if [ "$VENV" = 1 ]; then
  rm -rf .venv-gpucheck
  "$PY" -m venv --system-site-packages .venv-gpucheck
  PY=.venv-gpucheck/bin/python
fi
pip=("$PY" -m pip --disable-pip-version-check --no-input --isolated)
mapfile -t wheels < <(ls "$WH"/*.whl | grep -v '/setuptools-')  # setuptools: only ecr's isolated build uses it
"${pip[@]}" install -q --no-index --find-links "$WH" "${wheels[@]}"
"${pip[@]}" install -q --no-index --find-links "$WH" --no-deps -e .  # built with the wheelhouse's setuptools
"${pip[@]}" check > "$OUT/pip_check.txt" 2>&1 || true
echo "[gpu-check] installed in $((SECONDS - t0)) s; pip check: $(head -1 "$OUT/pip_check.txt")"
"$PY" - <<'EOF'
import torch, transformers, lightning
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"[gpu-check] torch {torch.__version__} (CUDA {torch.version.cuda}) | transformers {transformers.__version__} "
      f"| lightning {lightning.__version__} | {gpu}")
EOF

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
t1=$SECONDS
set +e
"$PY" -m pytest tests/gpu -m gpu -p no:cacheprovider -q -rs --junitxml="$OUT/gpu_tests.xml" \
  2>&1 | tee "$OUT/gpu_tests.log" | tail -25
set -e
echo "[gpu-check] tests/gpu in $((SECONDS - t1)) s"
PYABS=$("$PY" -c "import sys; print(sys.executable)")
has_cuda=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')
if [ "$BENCH" = 1 ] && [ "$has_cuda" = 1 ]; then
  t2=$SECONDS
  (cd benchmarks && timeout 240 "$PYABS" bench_grpo.py --lm qwen2.5-omni-3b --device cuda \
     --dtype bfloat16 --prompts 2 --groups 4 --tokens 32 --repeats 2) > "$OUT/bench_grpo.txt" 2>&1 \
     || echo "bench_grpo.py failed or ran over 240 s (see $OUT/bench_grpo.txt)" >> "$OUT/bench_grpo.txt"
  echo "[gpu-check] bench_grpo.py (Qwen2.5-Omni-3B LM shape) in $((SECONDS - t2)) s"
fi

"$PY" - "$OUT" <<'EOF'
"""The check's table: one row per GPU test (result, seconds, reason of a skip/failure), then the benchmark."""
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

out = Path(sys.argv[1])
rows = []
for case in ET.parse(out / "gpu_tests.xml").iter("testcase"):
    name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
    status, why = "pass", ""
    for tag in ("failure", "error", "skipped"):
        node = case.find(tag)
        if node is not None:
            status = {"failure": "FAIL", "error": "ERROR", "skipped": "skip"}[tag]
            why = " ".join((node.get("message") or "").split())[:70]
    rows.append((name, status, f"{float(case.get('time', 0)):.1f}", why))
width = max([len(r[0]) for r in rows] + [5])
print(f"\n{'check':<{width}}  {'result':<6} {'s':>6}  detail")
for name, status, secs, why in rows:
    print(f"{name:<{width}}  {status:<6} {secs:>6}  {why}")
counts = {s: sum(r[1] == s for r in rows) for s in ("pass", "FAIL", "ERROR", "skip")}
print("  ".join(f"{k}: {v}" for k, v in counts.items()))
bench = out / "bench_grpo.txt"
if bench.is_file():
    print("\nbenchmarks/bench_grpo.py, random model of Qwen2.5-Omni-3B's LM shape:")
    print("\n".join(line for line in bench.read_text().splitlines() if "warn" not in line.lower()))
EOF
echo "[gpu-check] done in $((SECONDS - t0)) s (files in $OUT/)"
! grep -q -E '<(failure|error)' "$OUT/gpu_tests.xml"
