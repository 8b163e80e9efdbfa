"""Detection metrics: PASCAL VOC AP@0.5, COCO mAP@[.5:.95] (pycocotools), PR curves, confusion matrix.

Predictions and ground truth are :class:`~.io.records.AnnotationSet` objects whose images are paired by file name
(stem); predictions carry scores. Classes are paired by name, so a model's class list need not be in the ground
truth's order; predicted classes the ground truth lacks count as false positives of a class with no AP.

* ``voc_ap``: all-point interpolated AP (VOC 2010+): the area under the precision envelope; each ground-truth box
  can be matched once, detections taken in descending score order and matched to the unmatched box they overlap
  most (COCO's rule; VOC's devkit differs only when a detection's best box is taken and another would still match).
* ``coco_map``: pycocotools' COCOeval, with ``maxDets`` raised to 1000 per image because dense smears hold more
  than COCO's 100 cells; the ``coco_style_ap`` re-implementation exists to cross-check it in the tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BloodcellInputError
from .io.records import AnnotationSet, ImageRecord

MAX_DETS = 1000


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between xyxy boxes ``a`` (N) and ``b`` (M), continuous pixel edges (no +1); two zero-area boxes overlap
    by 0.

    Bit-identical to ``torchvision.ops.box_iou`` wherever that is defined (tested), but kept in NumPy: the
    evaluator then never imports torch, and small matrices (one image, one class) cost a third as much (see
    docs/design.md, "Issue 15: libraries")."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-12)


@dataclasses.dataclass
class Paired:
    """Ground truth and predictions on the same images, with predicted labels mapped onto the GT class list."""

    classes: list[str]
    gt: list[ImageRecord]
    pred: list[ImageRecord]
    pred_labels: list[np.ndarray]
    """Per image, predicted labels as GT class indices (-1 for a class the ground truth lacks)."""
    unmatched_images: list[str]


def pair(gt: AnnotationSet, pred: AnnotationSet, restrict_to_pred: bool = True) -> Paired:
    """Pair images by stem; with ``restrict_to_pred`` only ground-truth images the predictions list are used."""
    by_stem = {Path(r.file_name).stem: r for r in pred.images}
    gt_images, pred_images, labels, missing = [], [], [], []
    mapping = np.array([gt.classes.index(c) if c in gt.classes else -1 for c in pred.classes] or [-1])
    for rec in gt.images:
        p = by_stem.get(Path(rec.file_name).stem)
        if p is None:
            missing.append(rec.file_name)
            if restrict_to_pred:
                continue
            p = ImageRecord(rec.file_name, rec.width, rec.height, scores=np.zeros(0))
        gt_images.append(rec)
        pred_images.append(p)
        labels.append(mapping[p.labels] if len(p) else np.zeros(0, dtype=np.int64))
    if not gt_images:
        raise BloodcellInputError(
            f"no image of the predictions ({len(pred.images)}) is in the ground truth ({len(gt.images)} images); "
            "images are paired by file name without extension"
        )
    return Paired(list(gt.classes), gt_images, pred_images, labels, missing)


def _scores(rec: ImageRecord) -> np.ndarray:
    return np.ones(len(rec)) if rec.scores is None else np.nan_to_num(rec.scores, nan=1.0)


def greedy_match(ious: np.ndarray, iou_thr: float) -> np.ndarray:
    """For detections already in descending score order (rows of ``ious``), the ground-truth box each one takes,
    or -1: the unmatched box it overlaps most, if that overlap reaches ``iou_thr``; each box is taken once."""
    matched = np.full(ious.shape[0], -1, dtype=np.int64)
    if not ious.shape[1]:
        return matched
    taken = np.zeros(ious.shape[1], dtype=bool)
    for k in range(ious.shape[0]):
        cand = np.where(taken, -1.0, ious[k])
        j = int(np.argmax(cand))
        if cand[j] >= iou_thr:
            taken[j] = True
            matched[k] = j
    return matched


def match_class(p: Paired, cls: int, iou_thr: float, max_dets: int | None = None):
    """Score-sorted detections of one class with their TP flags, and the number of ground-truth boxes."""
    scores_all, tp_all = [], []
    n_gt = 0
    for g, d, dl in zip(p.gt, p.pred, p.pred_labels):
        gt_boxes = g.boxes[g.labels == cls]
        n_gt += len(gt_boxes)
        sel = np.flatnonzero(dl == cls)
        s = _scores(d)[sel]
        order = np.argsort(-s, kind="mergesort")
        if max_dets is not None:
            order = order[:max_dets]
        boxes, s = d.boxes[sel][order], s[order]
        scores_all.append(s)
        tp_all.append(greedy_match(iou_matrix(boxes, gt_boxes), iou_thr) >= 0)
    scores = np.concatenate(scores_all) if scores_all else np.zeros(0)
    tp = np.concatenate(tp_all) if tp_all else np.zeros(0, dtype=bool)
    order = np.argsort(-scores, kind="mergesort")
    return scores[order], tp[order], n_gt


def pr_curve(tp: np.ndarray, n_gt: int) -> tuple[np.ndarray, np.ndarray]:
    ctp = np.cumsum(tp)
    cfp = np.cumsum(~tp)
    recall = ctp / max(n_gt, 1)
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    return recall, precision


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP: area under the monotone precision envelope."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def coco_style_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """101-point interpolated AP as COCOeval computes it."""
    if not len(recall):
        return 0.0
    env = np.maximum.accumulate(precision[::-1])[::-1]
    thresholds = np.linspace(0, 1, 101)
    idx = np.searchsorted(recall, thresholds, side="left")
    return float(np.mean([env[i] if i < len(env) else 0.0 for i in idx]))


def detection_report(gt: AnnotationSet, pred: AnnotationSet, iou: float = 0.5) -> dict[str, Any]:
    """Per-class VOC AP at ``iou``, their mean over classes with ground truth, and COCO mAP@[.5:.95]."""
    p = pair(gt, pred)
    per_class: dict[str, Any] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    aps = []
    for c, name in enumerate(p.classes):
        _, tp, n_gt = match_class(p, c, iou)
        recall, precision = pr_curve(tp, n_gt)
        ap = voc_ap(recall, precision) if n_gt else float("nan")
        per_class[name] = {"AP50": ap, "n_gt": int(n_gt), "n_pred": len(tp)}
        curves[name] = (recall, precision)
        if n_gt:
            aps.append(ap)
    extra = sorted(set(pred.classes) - set(gt.classes))
    coco = coco_map(p)
    return {
        "mAP50": float(np.mean(aps)) if aps else float("nan"),
        "mAP": coco["mAP"],
        "per_class": per_class,
        "iou": iou,
        "images": len(p.gt),
        "images_without_predictions": p.unmatched_images,
        "classes_not_in_ground_truth": extra,
        "coco": coco,
        "_curves": curves,
    }


def _coco_objects(p: Paired) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    images, anns, dets = [], [], []
    for i, (g, d, dl) in enumerate(zip(p.gt, p.pred, p.pred_labels), start=1):
        images.append({"id": i, "file_name": g.file_name, "width": g.width, "height": g.height})
        for b, lab in zip(g.boxes, g.labels):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(lab) + 1,
                         "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h, "iscrowd": 0})
        for b, lab, s in zip(d.boxes, dl, _scores(d)):
            if lab < 0:
                continue
            dets.append({"image_id": i, "category_id": int(lab) + 1, "score": float(s),
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    cats = [{"id": c + 1, "name": n} for c, n in enumerate(p.classes)]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def coco_map(p: Paired) -> dict[str, Any]:
    """COCO mAP@[.5:.95], mAP@.5 and per-class AP@[.5:.95] through pycocotools (its printing silenced)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_dict, dets = _coco_objects(p)
    if not dets:
        return {"mAP": 0.0, "mAP50": 0.0, "per_class": {n: 0.0 for n in p.classes}}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_dict
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.maxDets = [1, 10, MAX_DETS]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, -1]  # iou, recall, class, area=all, maxDets=last
    per_class = {}
    for c, name in enumerate(p.classes):
        vals = precision[:, :, c]
        per_class[name] = float(vals[vals > -1].mean()) if (vals > -1).any() else float("nan")
    # COCOeval.summarize() reads stats[0] at maxDets=100 whatever params say, so average its precision array
    valid = precision > -1
    m = float(precision[valid].mean()) if valid.any() else 0.0
    m50 = float(precision[0][valid[0]].mean()) if valid[0].any() else 0.0
    return {"mAP": m, "mAP50": m50, "per_class": per_class, "precision": precision}


def confusion_matrix(gt: AnnotationSet, pred: AnnotationSet, iou: float = 0.5, score: float = 0.5) -> dict[str, Any]:
    """Class confusion of detections at ``iou``: rows are true classes plus ``background`` (a false detection),
    columns predicted classes plus ``missed`` (a cell no detection found). Detections below ``score`` are ignored;
    matching is class-agnostic, greedy by score."""
    p = pair(gt, pred)
    n = len(p.classes)
    cm = np.zeros((n + 1, n + 1), dtype=np.int64)
    for g, d, dl in zip(p.gt, p.pred, p.pred_labels):
        s = _scores(d)
        keep = (s >= score) & (dl >= 0)
        boxes, labels, s = d.boxes[keep], dl[keep], s[keep]
        order = np.argsort(-s, kind="mergesort")
        matched = greedy_match(iou_matrix(boxes[order], g.boxes), iou)
        for j, lab in zip(matched, labels[order]):
            cm[g.labels[j] if j >= 0 else n, lab] += 1
        for j in np.setdiff1d(np.arange(len(g)), matched):
            cm[g.labels[j], n] += 1
    return {"rows": p.classes + ["background"], "columns": p.classes + ["missed"], "matrix": cm.tolist(),
            "iou": iou, "score": score}
