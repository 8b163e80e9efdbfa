#!/usr/bin/env bash
# The review loop's batch side on real data: BCCD's ground truth imported as a reviewed project, exported as a
# dataset, a weak detector registered, retrained twice; the registry decides what becomes active.
#   bash benchmarks/review_loop_bccd.sh OUT PARENT.pt [EPOCHS]
# PARENT: a YOLOv3 checkpoint for Platelets/RBC/WBC (e.g. one epoch of `bloodcell train detector --arch yolov3`).
set -euo pipefail
OUT=${1:?output folder}; PARENT=${2:?parent checkpoint}; EPOCHS=${3:-3}
BCCD=$(dirname "$0")/../../shared/data/bccd
B=${BLOODCELL:-.venv/bin/bloodcell}
export BLOODCELL_HOME=$OUT/home
mkdir -p "$OUT"
time $B review import "$BCCD" --project "$OUT/review" --as-ground-truth
time $B export "$OUT/review" --dataset "$OUT/dataset" --no-crops --by benchmark
$B models add "$PARENT" --activate --registry "$OUT/registry" --by benchmark
time $B retrain --dataset "$OUT/dataset" --registry "$OUT/registry" --epochs "$EPOCHS" --lr 1e-3 --batch 4 --by benchmark
time $B retrain --dataset "$OUT/dataset" --registry "$OUT/registry" --epochs 1 --lr 1e-4 --batch 4 --by benchmark
$B models list --registry "$OUT/registry"
$B models list --registry "$OUT/registry" --json > "$OUT/registry.json"
