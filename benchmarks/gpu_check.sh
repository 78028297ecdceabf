#!/usr/bin/env bash
# Run the GPU check on a bare machine: unpack the carried wheels (.whl/, made by gpu_wheels.sh) for the
# packages that are missing there, then run benchmarks/gpu_check.py with the given arguments.
# Unpacking (a wheel is a zip) needs no pip and no network, and leaves the machine's packages alone.
set -euo pipefail
PYTHON="${PYTHON:-python}"
cd "$(dirname "$0")/.."
SITE=.whl/site
mkdir -p "$SITE"
declare -A MODULE=([megatron_core]=megatron.core [psutil]=psutil [tqdm]=tqdm [packaging]=packaging)
for wheel in .whl/*.whl; do
    [ -e "$wheel" ] || { echo "no wheels in .whl/: run benchmarks/gpu_wheels.sh first" >&2; exit 2; }
    dist=$(basename "$wheel" | cut -d- -f1)
    module=${MODULE[$dist]:-$dist}
    if ! "$PYTHON" -c "import $module" 2>/dev/null; then
        "$PYTHON" -m zipfile -e "$wheel" "$SITE"
        echo "unpacked $(basename "$wheel")"
    fi
done
export PYTHONPATH="$PWD/$SITE${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
exec "$PYTHON" benchmarks/gpu_check.py "$@"
