#!/usr/bin/env bash
# Transfer for the small problem (issue 17): WBC typing on ../shared/data/wbc_types, 5-fold cross-validation grouped
# by image (the same folds and crops as benchmarks/wbc_types.sh), YOLOv3-tiny's backbone with a linear head,
# started three ways: random weights; the shipped starter detector's backbone (trained on BCCD + TXL-PBC boxes,
# which include these photos' white-cell boxes but never their types); and the leave-BCCD-out detector's backbone
# (trained on TXL-PBC's PBC and Raabin crops only: it never saw a BCCD photo).
# Usage: bash benchmarks/wbc_transfer.sh INIT [EPOCHS]   INIT: none | starter | no_bccd (path of that detector in
#        NO_BCCD, default /work/starter/no_bccd.pt). Results: benchmarks/results/classification/darknet_tiny_<INIT>/
set -euo pipefail
INIT=${1:?none, starter or no_bccd}
EPOCHS=${2:-30}
DATA=../shared/data
OUT=benchmarks/results/classification/darknet_tiny_$INIT
BIN=${BLOODCELL:-.venv/bin/bloodcell}
case $INIT in
  none) WEIGHTS=none ;;
  starter) WEIGHTS=napari_bloodcell/models/starter_detector.pt ;;
  no_bccd) WEIGHTS=${NO_BCCD:-/work/starter/no_bccd.pt} ;;
  *) echo "INIT must be none, starter or no_bccd" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
"$BIN" train classifier --data "$DATA/wbc_types/labels.csv" --images "$DATA/bccd/JPEGImages" --boxes "$DATA/bccd" \
    --box-class WBC --min-count 10 --folds 5 --input-size 128 --json --quiet --report "$OUT" \
    --arch darknet_tiny --weights "$WEIGHTS" --mode all --optimizer adam --lr 1e-3 --balance sampler \
    --epochs "$EPOCHS" --patience 10 | tee "$OUT/summary.json"
