"""torchvision.ops.box_iou against the evaluator's own NumPy IoU (``metrics.iou_matrix``; issue 15, item 6).

    python benchmarks/box_iou.py [--data ../shared/data/bccd] [--json OUT.json]

1. Identity: the IoU matrices of every image's ground truth against a perturbed copy of it (jittered, some boxes
   dropped, false ones added, two zero-area boxes as BCCD has), ``metrics.iou_matrix`` vs ``box_iou`` (float64,
   NumPy in and out, its 0/0 for two zero-area boxes read as 0), compared bit for bit; then the whole evaluator
   (VOC AP per class, COCO mAP, the confusion matrix) with each IoU.
2. Speed: median microseconds per IoU call at the sizes the evaluator meets (one image, one class), and the whole
   ``detection_report`` + ``confusion_matrix`` on the data set with each.
3. Import: the cost of ``import torch, torchvision.ops`` in a fresh interpreter: what ``box_iou`` would add to
   ``bloodcell evaluate detection``, which otherwise never imports torch.

Without ``--data`` (or when it is missing) the shipped sample smears are used.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from napari_bloodcell.core import metrics
from napari_bloodcell.core.io.formats import read_annotations
from napari_bloodcell.core.io.records import AnnotationSet, ImageRecord

ROOT = Path(__file__).resolve().parents[1]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``torchvision.ops.box_iou`` with the evaluator's interface: float64 NumPy in and out, 0 (not 0/0) for two
    zero-area boxes."""
    import torch
    from torchvision.ops import box_iou as tv_box_iou

    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    ious = tv_box_iou(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)),
                      torch.from_numpy(np.ascontiguousarray(b, dtype=np.float64))).numpy()
    return np.nan_to_num(ious, nan=0.0, copy=False)


def perturbed(gt: AnnotationSet, seed: int = 0) -> AnnotationSet:
    """Predictions made from the ground truth: boxes jittered by up to 30% of their size, 15% dropped, one false
    box per image in three, scores uniform; two zero-area boxes added to the first image."""
    rng = np.random.default_rng(seed)
    out = []
    for k, rec in enumerate(gt.images):
        boxes, labels = rec.boxes.copy(), rec.labels.copy()
        keep = rng.random(len(boxes)) > 0.15
        boxes, labels = boxes[keep], labels[keep]
        wh = boxes[:, 2:] - boxes[:, :2]
        boxes = boxes + rng.uniform(-0.15, 0.15, boxes.shape) * np.concatenate([wh, wh], 1)
        if k % 3 == 0:
            xy = rng.uniform(0, [rec.width - 40, rec.height - 40])
            boxes = np.vstack([boxes, [*xy, *(xy + 40)]])
            labels = np.append(labels, rng.integers(0, len(gt.classes)))
        if k == 0:
            boxes = np.vstack([boxes, [10, 10, 10, 30], [50, 50, 70, 50]])
            labels = np.append(labels, [0, 0])
        out.append(ImageRecord(rec.file_name, rec.width, rec.height, boxes, labels,
                               scores=rng.uniform(0.05, 1.0, len(boxes))))
    return AnnotationSet(list(gt.classes), out)


def with_iou(fn, call):
    saved = metrics.iou_matrix
    metrics.iou_matrix = fn
    try:
        return call()
    finally:
        metrics.iou_matrix = saved


def reports(gt, pred):
    report = metrics.detection_report(gt, pred)
    report.pop("_curves")
    report["coco"] = {k: v for k, v in report["coco"].items() if k != "precision"}
    return report, metrics.confusion_matrix(gt, pred)


def timed(fns, a, b, repeat: int) -> list[float]:
    """Median microseconds per call of each function, calls interleaved."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, t in zip(fns, times):
            start = time.perf_counter()
            fn(a, b)
            t.append(time.perf_counter() - start)
    return [float(np.median(t)) * 1e6 for t in times]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "bccd"))
    ap.add_argument("--json")
    args = ap.parse_args()
    data = Path(args.data)
    source = data if data.is_dir() else ROOT / "sample_data" / "smear" / "annotations.json"
    gt = read_annotations(source)
    pred = perturbed(gt)
    result: dict = {"data": str(source), "images": len(gt.images), "gt_boxes": gt.n_boxes,
                    "pred_boxes": sum(len(r) for r in pred.images)}

    identical, pairs = True, 0
    for g, p in zip(gt.images, pred.images):
        a, b = metrics.iou_matrix(p.boxes, g.boxes), box_iou(p.boxes, g.boxes)
        identical &= bool(np.array_equal(a, b))
        pairs += a.size
    new = with_iou(box_iou, lambda: reports(gt, pred))
    old = reports(gt, pred)
    result["identical_matrices"] = identical
    result["iou_pairs"] = pairs
    result["identical_reports"] = json.dumps(old, sort_keys=True, default=float) == json.dumps(
        new, sort_keys=True, default=float)
    result["mAP50"], result["mAP"] = old[0]["mAP50"], old[0]["mAP"]

    rng = np.random.default_rng(1)
    speed = []
    for n, m in [(5, 1), (20, 15), (60, 50), (300, 50)]:
        boxes = rng.uniform(0, 600, (n + m, 2))
        boxes = np.concatenate([boxes, boxes + rng.uniform(5, 60, (n + m, 2))], 1)
        repeat = 2000 if n * m < 5000 else 300
        numpy_us, box_iou_us = timed((metrics.iou_matrix, box_iou), boxes[:n], boxes[n:], repeat)
        speed.append({"pred": n, "gt": m, "numpy_us": numpy_us, "box_iou_us": box_iou_us})
    result["per_call"] = speed
    runs: dict[str, list[float]] = {"numpy": [], "box_iou": []}
    for _ in range(5):  # interleaved, best of 5: the machine's load moves both alike
        for name, fn in (("numpy", metrics.iou_matrix), ("box_iou", box_iou)):
            start = time.perf_counter()
            with_iou(fn, lambda: reports(gt, pred))
            runs[name].append(time.perf_counter() - start)
    for name, times in runs.items():
        result[f"evaluate_s_{name}"] = min(times)
    code = "import time; t = time.perf_counter(); import torch, torchvision.ops; print(time.perf_counter() - t)"
    result["import_torch_torchvision_ops_s"] = min(
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        for _ in range(3))
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
