#!/usr/bin/env bash
# HighRes3DNet on MSD Task04 hippocampus (../shared/data/msd_hippocampus): train from random weights with the
# thesis's recipe on 32^3 windows (CPU budget), validate on a split that keeps each left/right pair of cases
# together, then score the best checkpoint's validation cases (Dice, HD95 per label).
# Usage: bash benchmarks/hippocampus.sh [ITERATIONS] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data/msd_hippocampus
ITER=${1:-1500}
OUT=${2:-benchmarks/results/segmentation}
BC=${BLOODCELL:-bloodcell}
mkdir -p "$OUT"
$BC train segmenter "$DATA" --pair-cases --val-fraction 0.2 --patch 32 --val-patch 48,64,48 \
    --iterations "$ITER" --val-every 250 --sampler weighted --batch 2 --lr 1e-3 --weight-decay 1e-4 \
    --out "$OUT/hippocampus_scratch.pt" --json > "$OUT/hippocampus_train.json"
$BC evaluate segmentation --model "$OUT/hippocampus_scratch.pt" --gt "$DATA" --split val --patch 48,64,48 \
    --json > "$OUT/hippocampus_eval.json"
$BC evaluate segmentation --model "$OUT/hippocampus_scratch.pt" --gt "$DATA" --split val --patch 48,64,48 \
    --largest-component --json > "$OUT/hippocampus_eval_largest.json"
