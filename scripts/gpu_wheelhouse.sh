#!/usr/bin/env bash
# Builds wheelhouse/ on a machine WITH network: the wheels of exactly what a GPU image lacks for ecr's GPU check
# (scripts/gpu_check.sh), for that image's Python (3.12, manylinux x86_64). The image's own packages
# (requirements/gpu_image.txt: torch 2.11, transformers 5.17, lightning 2.6.6, ...) and everything they pull
# are left out; what remains is ecr's missing dependencies (jsonargparse[signatures]; transformers, whose 5.17
# predates ecr's range), the extras the GPU tests use (bitsandbytes, deepspeed built from its sdist into a
# wheel) with their own dependencies, at the lock's versions, and setuptools (ecr's build backend). The text
# and API extras (nrclex, pysbd, openai) are not carried: no GPU test uses them and the 60 MiB would not hold
# them with transformers. Refuses a wheelhouse over the carry limit (60 MiB by default).
#   scripts/gpu_wheelhouse.sh [--python 3.12] [--out wheelhouse] [--max-mib 60]
# PYTHON: the lock's venv whose metadata is walked (default .venv, from scripts/setup.sh); IMAGE_PYTHON: a venv
# built like the image (default: the image's packages are looked up in PYTHON's venv).
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
PY_BIN=${PYTHON:-.venv/bin/python}
[ -x "$PY_BIN" ] || { echo "gpu_wheelhouse.sh: $PY_BIN not found: run scripts/setup.sh first (or set PYTHON)" >&2; exit 2; }
pip=("$PY_BIN" -m pip)
tag=$(echo "$PY" | tr -d .)
target=(--python-version "$PY" --implementation cp --abi "cp$tag" --abi abi3 --abi none --only-binary=:all:)
for glibc in 34 31 28 27 24 18 17 12 5; do target+=(--platform "manylinux_2_${glibc}_x86_64"); done
target+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 --platform any)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$OUT" && mkdir -p "$OUT"

# What the image lacks = the dependency closure of ecr's missing packages (walked over the installed metadata of
# the lock's venv, .venv: every package at the lock's version) minus the closure of the image's packages (walked
# in IMAGE_PYTHON, a venv built like the image, when given; else in .venv too).
cat > "$work/closure.py" <<'PYEOF'
"""Print name==version of the given requirements and everything they require, as installed here."""
import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

seen: dict[str, str] = {}
todo = [Requirement(r) for r in sys.argv[1:]]
while todo:
    req = todo.pop()
    name = canonicalize_name(req.name)
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        continue  # a marker-excluded or optional dependency this venv does not hold
    if name in seen and not req.extras:
        continue
    seen[name] = dist.version
    envs = [{"extra": e} for e in req.extras] or [{"extra": ""}]
    for line in dist.requires or []:
        sub = Requirement(line)
        if sub.marker is None or any(sub.marker.evaluate(env) for env in envs):
            todo.append(sub)
print("\n".join(f"{n}=={v}" for n, v in sorted(seen.items())))
PYEOF
# An image package older than ecr's range (transformers 5.17 < 5.23) is carried too, at the lock's version.
mapfile -t stale < <("$PY_BIN" - <<'PYEOF'
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

core = {canonicalize_name(r.name): r for r in map(Requirement, tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"])}
for line in open("requirements/gpu_image.txt"):
    name, _, version = line.split("#", 1)[0].strip().partition("==")
    if version and canonicalize_name(name) in core and not core[canonicalize_name(name)].specifier.contains(version):
        print(canonicalize_name(name))
PYEOF
)
mapfile -t image < <(grep -v '^#' requirements/gpu_image.txt | cut -d= -f1 | grep . | grep -v -x -F -f <(printf '%s\n' "${stale[@]}" ""))
"${IMAGE_PYTHON:-$PY_BIN}" "$work/closure.py" "${image[@]}" | cut -d= -f1 | sort > "$work/image.txt"
"$PY_BIN" "$work/closure.py" "jsonargparse[signatures]" bitsandbytes deepspeed "${stale[@]}" | sort > "$work/ecr.txt"
printf '%s\n' "${stale[@]}" > "$work/stale.txt"  # carried even though the image holds (an older) one
awk -F'==' 'FILENAME == ARGV[1] { force[$1]; next } FILENAME == ARGV[2] { have[$1]; next }
            ($1 in force) || !($1 in have)' "$work/stale.txt" "$work/image.txt" "$work/ecr.txt" > "$work/need.txt"
grep '^setuptools==' requirements/lock.txt >> "$work/need.txt"  # ecr's build backend (an image's may be older)
echo "[wheelhouse] $(wc -l < "$work/need.txt") packages the image lacks: $(tr '\n' ' ' < "$work/need.txt")"

echo "[wheelhouse] deepspeed: sdist -> wheel (pure Python; its CUDA ops are JIT-built where they are used)"
ds=$(grep -i '^deepspeed==' "$work/need.txt")
DS_BUILD_OPS=0 "${pip[@]}" wheel -q --no-deps --no-build-isolation "$ds" -w "$OUT" 2>&1 | grep -v 'is ignored' || true
ls "$OUT"/deepspeed-*-py3-none-any.whl > /dev/null
grep -iv '^deepspeed==' "$work/need.txt" > "$work/download.txt"
"${pip[@]}" download -q --no-deps "${target[@]}" -d "$OUT" -r "$work/download.txt" 2>&1 | grep -v 'is ignored' || true
if [ "$(ls "$OUT"/*.whl | wc -l)" -ne "$(wc -l < "$work/need.txt")" ]; then
  echo "gpu_wheelhouse.sh: got $(ls "$OUT"/*.whl | wc -l) wheels for the $(wc -l < "$work/need.txt") packages above" >&2
  exit 1
fi
size=$(du -sb "$OUT" | cut -f1)
echo "[wheelhouse] $OUT: $(ls "$OUT" | wc -l) wheels, $((size / 1048576)) MiB"
ls -S "$OUT" | head -5 | sed 's/^/  largest: /'
if [ "$size" -gt $((MAX_MIB * 1048576)) ]; then
  echo "gpu_wheelhouse.sh: $OUT is $((size / 1048576)) MiB, over the ${MAX_MIB} MiB a GPU call can carry" >&2
  exit 1
fi
