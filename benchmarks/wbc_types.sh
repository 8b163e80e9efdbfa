#!/usr/bin/env bash
# WBC typing on ../shared/data/wbc_types: 5-fold cross-validation grouped by image, crops of BCCD's WBC boxes.
# Usage: bash benchmarks/wbc_types.sh [EPOCHS] [INPUT_SIZE]   (from the repository root; results in
# benchmarks/results/classification/<recipe>/report.json + confusion_normalised.png + roc.png)
set -euo pipefail
EPOCHS=${1:-30}
SIZE=${2:-128}
DATA=../shared/data
OUT=benchmarks/results/classification
BIN=${BLOODCELL:-.venv/bin/bloodcell}
common=(--data "$DATA/wbc_types/labels.csv" --images "$DATA/bccd/JPEGImages" --boxes "$DATA/bccd" --box-class WBC
        --min-count 10 --folds 5 --input-size "$SIZE" --weights none --json --quiet)
run() { local name=$1; shift; mkdir -p "$OUT/$name"; "$BIN" train classifier "${common[@]}" --report "$OUT/$name" "$@" \
        | tee "$OUT/$name/summary.json"; }
run vgg16_fc7_svm --arch vgg16 --svm
run resnet50_all --arch resnet50 --mode all --optimizer rmsprop --lr 1e-4 --epochs "$EPOCHS" --patience 10
run resnet50_last --arch resnet50 --mode last --optimizer rmsprop --lr 1e-4 --epochs "$EPOCHS" --patience 10
run densenet121_discriminative --arch densenet121 --mode discriminative --optimizer adam --lr 1e-3 \
    --balance sampler --epochs "$EPOCHS" --patience 10
