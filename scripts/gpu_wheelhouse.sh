#!/usr/bin/env bash
# Builds wheelhouse/ on a machine WITH network: the wheels of exactly what a GPU image lacks for ecr's GPU check
# (scripts/gpu_check.sh), for that image's Python (3.12, manylinux x86_64). The image's own packages
# (requirements/gpu_image.txt: torch 2.11, transformers 5.17, lightning 2.6.6, ...) and everything they pull
# are left out; what remains is ecr's missing dependencies (jsonargparse[signatures]) and the extras the GPU
# tests use (bitsandbytes, deepspeed built from its sdist into a wheel, openai, nrclex, pysbd) with their own
# dependencies, at the lock's versions. Refuses a wheelhouse over the carry limit (60 MiB by default).
#   scripts/gpu_wheelhouse.sh [--python 3.12] [--out wheelhouse] [--max-mib 60]
# (PYTHON=/path/to/python picks the interpreter whose pip does the work; default python3.)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=3.12 OUT=wheelhouse MAX_MIB=60
while [ $# -gt 0 ]; do
  case "$1" in
    --python) PY=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --max-mib) MAX_MIB=$2; shift 2 ;;
    *) echo "gpu_wheelhouse.sh: unknown option $1 (options: --python X.Y, --out DIR, --max-mib N)" >&2; exit 2 ;;
  esac
done
pip=("${PYTHON:-python3}" -m pip)
tag=$(echo "$PY" | tr -d .)
target=(--python-version "$PY" --implementation cp --abi "cp$tag" --abi abi3 --abi none --only-binary=:all:)
for glibc in 34 31 28 27 24 18 17 12 5; do target+=(--platform "manylinux_2_${glibc}_x86_64"); done
target+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 --platform any)
# ecr's requirements beyond the image: core ones the image lacks + the extras the GPU tests use (lock versions)
lock() { grep -i "^$1==" requirements/lock.txt; }
missing=("jsonargparse[signatures]==$(lock jsonargparse | cut -d= -f3)" "$(lock bitsandbytes)" "$(lock deepspeed)"
         "$(lock openai)" "$(lock nrclex)" "$(lock pysbd)")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$OUT" && mkdir -p "$OUT"

echo "[wheelhouse] deepspeed: sdist -> wheel (pure Python; its CUDA ops are JIT-built where they are used)"
DS_BUILD_OPS=0 "${pip[@]}" wheel -q --no-deps --no-build-isolation "$(lock deepspeed)" -w "$work/local" 2>/dev/null \
  || DS_BUILD_OPS=0 "${pip[@]}" wheel -q --no-deps "$(lock deepspeed)" -w "$work/local"

resolve() {  # resolve() OUT.json REQUIREMENTS...: what pip would install for the target Python (nothing installed)
  local report=$1; shift
  "${pip[@]}" install -q --dry-run --ignore-installed --no-warn-conflicts --target "$work/none" --report "$report" \
    "${target[@]}" --find-links "$work/local" "$@"
}
names() {  # the (normalised name==version) lines of a pip report, sorted
  python3 -c 'import json, re, sys
for i in json.load(open(sys.argv[1]))["install"]:
    print(re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower() + "==" + i["metadata"]["version"])' "$1" | sort
}
cp requirements/gpu_image.txt "$work/image.txt"
[ "$PY" = "3.12" ] || sed -i 's/^numpy==.*/numpy/' "$work/image.txt"  # the image's numpy 2.5.2: a cp312 build
image=(-r "$work/image.txt")
echo "[wheelhouse] resolving the image and the image + ecr's missing packages for Python $PY"
resolve "$work/image.json" "${image[@]}"
resolve "$work/full.json" "${image[@]}" "${missing[@]}"
comm -13 <(names "$work/image.json") <(names "$work/full.json") > "$work/need.txt"
echo "[wheelhouse] $(wc -l < "$work/need.txt") packages the image lacks: $(tr '\n' ' ' < "$work/need.txt")"
grep -iv '^deepspeed==' "$work/need.txt" > "$work/download.txt" || true
"${pip[@]}" download -q --no-deps "${target[@]}" -d "$OUT" -r "$work/download.txt"
cp "$work"/local/deepspeed-*.whl "$OUT/"
size=$(du -sb "$OUT" | cut -f1)
echo "[wheelhouse] $OUT: $(ls "$OUT" | wc -l) wheels, $((size / 1048576)) MiB"
ls -S "$OUT" | head -5 | sed 's/^/  largest: /'
if [ "$size" -gt $((MAX_MIB * 1048576)) ]; then
  echo "gpu_wheelhouse.sh: $OUT is $((size / 1048576)) MiB, over the ${MAX_MIB} MiB a GPU call can carry" >&2
  exit 1
fi
