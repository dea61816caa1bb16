#!/usr/bin/env bash
# Wheels that the device machine lacks, fetched here for its Python 3.12 (it reaches no
# package registry): pydantic (the audit configuration), and our pins of pandas and timm so
# that the GPU figures come from the same code paths and architectures as CI's.
#   bash benchmarks/gpu_wheels.sh      then carry `.whl` in the device call (see gpu.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
pin() { grep -i -E "^$1==" constraints.txt | head -1; }
platforms=()
for n in 2_28 2_27 2_24 2_17 2014 1; do
  case $n in 2014) platforms+=(--platform manylinux2014_x86_64);;
             1) platforms+=(--platform manylinux1_x86_64);;
             *) platforms+=(--platform "manylinux_${n}_x86_64");; esac
done
for name in pydantic pydantic_core annotated-types typing-inspection typing_extensions \
            pandas pytz tzdata python-dateutil timm; do
  spec=$(pin "$name")
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" -d .whl "${spec:-$name}"
done
ls -la .whl
du -sh .whl
