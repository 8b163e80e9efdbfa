#!/usr/bin/env bash
# GPU figures in one run (issue 18): ms per 640x480 field for the shipped detectors at batch 1 and 16, seconds per
# 256x256x150 volume for HighRes3DNet, and one retrain of 50 fields; writes benchmarks/results/gpu.json beside the
# CPU results. Fails with status 3 and one line when no CUDA GPU is present.
#   bash benchmarks/gpu.sh [--device cuda:N] [--repeats 10]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
[[ -x $python ]] || python=python3
exec "$python" benchmarks/gpu_bench.py --out benchmarks/results/gpu.json "$@"
