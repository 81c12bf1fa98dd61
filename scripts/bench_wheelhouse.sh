#!/usr/bin/env bash
# Wheels for scripts/bench_accelerator.py on a device image that lacks packages (no network there).
#
#   scripts/bench_wheelhouse.sh            # here, where pip reaches PyPI: writes .whl/ (in .gitignore)
#
# then carry .whl to the device machine and, before the bench:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
#   PYTHONPATH=/tmp/site:. python3 scripts/bench_accelerator.py --out bench_accelerator.md
#
# The image already holds JAX (CUDA), flax, optax, orbax, torch, einops, safetensors, scipy,
# PyYAML, tqdm and matplotlib; the bench needs MONAI (the reference) and nibabel (NIfTI) besides.
# grain, array-record, portpicker and tensorboardX make the whole package importable (training).
# PY_VERSION / PLATFORMS select the target interpreter (default: CPython 3.12, manylinux x86-64).
set -euo pipefail
cd "$(dirname "$0")/.."
PY_VERSION=${PY_VERSION:-3.12}
PLATFORMS=${PLATFORMS:-"manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64"}
PYTHON=${PYTHON:-python3}
mkdir -p .whl
args=(--no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp -d .whl)
for p in $PLATFORMS; do args+=(--platform "$p"); done
# Pure-Python wheels first (any platform), then the one with compiled code.
"$PYTHON" -m pip download "${args[@]}" monai==1.6.1 nibabel==5.4.2 tensorboardX==2.6.5 \
    grain==0.2.18 portpicker
"$PYTHON" -m pip download "${args[@]}" array-record
ls -la .whl
