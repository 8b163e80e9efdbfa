#!/usr/bin/env bash
# Issue 15 re-measurement: the YOLOv3-320 BCCD recipe of docs/benchmarks.md, trained through the shared engine
# (float16 best checkpoint), detected and scored on the same fixed validation split.
#   bash benchmarks/yolov3_engine.sh [OUT_DIR]
set -euo pipefail
OUT=${1:-benchmarks/results/detection_engine}
BCCD=../shared/data/bccd
PY=${PY:-.venv/bin/python}
BC=${BC:-.venv/bin/bloodcell}
mkdir -p "$OUT"
mapfile -t VAL < <($PY benchmarks/bccd_split.py val --root $BCCD)
$BC train detector --data $BCCD --val-fraction 0.2 --arch yolov3 --epochs 15 --lr 0.001 --batch 4 --weights none \
    --arch-arg input_size=320 --optimizer adamw --out "$OUT/yolov3.pt" 2> "$OUT/yolov3.train.log" > "$OUT/yolov3.train.json"
$BC detect "${VAL[@]}" --model "$OUT/yolov3.pt" --score 0.01 --out "$OUT/yolov3_val.json" --quiet
$BC evaluate detection --pred "$OUT/yolov3_val.json" --gt $BCCD --json > "$OUT/yolov3.eval.json"
ls -l "$OUT/yolov3.pt" > "$OUT/yolov3.size.txt"
echo done
