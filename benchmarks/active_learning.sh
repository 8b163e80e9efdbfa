#!/usr/bin/env bash
# Active learning simulated on real data (issue 19): detection (BCCD fields, a first detector from two other labs)
# and white-cell typing (wbc_types), four strategies, then the table and plot of docs/benchmarks.md.
# Usage: bash benchmarks/active_learning.sh [WORK]   WORK holds the first model and cached features
#        (default /work/al). About 80 minutes of the detection part and 15 of typing on 2 CPU cores.
set -euo pipefail
WORK=${1:-/work/al}
PY=${PYTHON:-.venv/bin/python}
OUT=benchmarks/results/active
mkdir -p "$WORK" "$OUT"
"$PY" benchmarks/active_learning.py detection --out "$OUT/detection.json" --init "$WORK/other_labs_320.pt" \
    --init-epochs 4 --epochs 4 --seeds 3 2>&1 | tee -a "$WORK/detection.log"
"$PY" benchmarks/active_learning.py typing --out "$OUT/typing.json" --cache "$WORK/wbc_features16.npz" \
    2>&1 | tee -a "$WORK/typing.log"
"$PY" benchmarks/active_learning.py report --detection "$OUT/detection.json" --typing "$OUT/typing.json" \
    --plot docs/images/active_learning.png --json "$OUT/summary.json"
