#!/usr/bin/env sh
# Run the CUDA backend tests under numba's CUDA simulator (no GPU needed). The variable
# must be set before numba is imported, hence a pytest process of its own.
set -e
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
NUMBA_ENABLE_CUDASIM=1 exec "$PY" -m pytest tests/cuda -q "$@"
