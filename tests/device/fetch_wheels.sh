#!/usr/bin/env bash
# Fetch, here (where PyPI answers), the wheels that `transformers serve` needs and the device machine's Python
# lacks: fastapi, starlette, uvicorn, pydantic, openai and their needs, for CPython 3.12 on x86-64 Linux.
# The device machine has no network: run.sh installs them from tests/device/wheelhouse, which is git-ignored and
# travels with the run tool's carry argument. About 6 MB.
set -euo pipefail
cd "$(dirname "$0")"
rm -rf wheelhouse
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any \
    -d wheelhouse \
    'fastapi' 'starlette' 'uvicorn' 'pydantic>=2' 'openai>=1.98,<3'
ls wheelhouse
du -sh wheelhouse
