#!/usr/bin/env bash
# Download, here, the wheels the bare GPU machine needs for frontload's training path (no internet there):
# megatron-core and the small pure-Python packages it and the trainer import. They land in .whl/
# (ignored by git; name it in the device run's `carry`). About 3 MB in all, far under the 64 MiB limit.
set -euo pipefail
cd "$(dirname "$0")/.."
PY_VERSION="${PY_VERSION:-3.12}"  # the GPU machine's Python
mkdir -p .whl
python -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --dest .whl "megatron-core==0.16.1" "psutil>=5.9" "tqdm>=4.66" "packaging>=24.2"
du -sh .whl
ls .whl
