#!/usr/bin/env bash
# Detection benchmark on ../shared/data/bccd (see docs/benchmarks.md). Usage from the repository root:
#   bash benchmarks/detection_bccd.sh [OUT_DIR] [DEVICE]
# Trains from random weights (--weights none: no pretrained weights are reachable offline here).
set -euo pipefail
OUT=${1:-benchmarks/results/detection}
DEVICE=${2:-auto}
BCCD=../shared/data/bccd
PY=${PY:-.venv/bin/python}
BC=${BC:-.venv/bin/bloodcell}
mkdir -p "$OUT"
mapfile -t VAL < <($PY benchmarks/bccd_split.py val --root $BCCD)
echo "validation images: ${#VAL[@]}"

# classical detector: every dev image, and the validation split
$BC detect $BCCD --model classical --score 0.05 --out "$OUT/classical_all.json" --quiet
$BC evaluate detection --pred "$OUT/classical_all.json" --gt $BCCD --json > "$OUT/classical_all.eval.json"
$BC evaluate detection --pred "$OUT/classical_all.json" --gt $BCCD --plots "$OUT/plots_classical"
$BC detect "${VAL[@]}" --model classical --score 0.05 --out "$OUT/classical_val.json" --quiet
$BC evaluate detection --pred "$OUT/classical_val.json" --gt $BCCD --json > "$OUT/classical_val.eval.json"

train_eval() {  # arch epochs lr extra-args...
  local arch=$1 epochs=$2 lr=$3; shift 3
  $BC train detector --data $BCCD --val-fraction 0.2 --arch "$arch" --epochs "$epochs" --lr "$lr" --batch 4 \
      --weights none --device "$DEVICE" --out "$OUT/$arch.pt" "$@" 2> "$OUT/$arch.train.log" > "$OUT/$arch.train.json"
  $BC detect "${VAL[@]}" --model "$OUT/$arch.pt" --device "$DEVICE" --score 0.01 --out "$OUT/${arch}_val.json" --quiet
  $BC evaluate detection --pred "$OUT/${arch}_val.json" --gt $BCCD --json > "$OUT/$arch.eval.json"
  $BC evaluate detection --pred "$OUT/${arch}_val.json" --gt $BCCD --plots "$OUT/plots_$arch" > "$OUT/$arch.eval.txt"
}
train_eval ssd300_vgg16 ${SSD_EPOCHS:-6} 0.01
train_eval fasterrcnn_mobilenet_v3_large_fpn ${FRCNN_EPOCHS:-1} 0.01 --arch-arg min_size=480
train_eval yolov3 ${YOLO_EPOCHS:-15} 0.001 --arch-arg input_size=320 --optimizer adamw
echo done
