"""The evaluator: a hand-computed VOC AP, agreement with pycocotools, the confusion matrix and the plots."""

from __future__ import annotations

import numpy as np
import pytest

from napari_bloodcell.core.io.records import AnnotationSet, ImageRecord
from napari_bloodcell.core.metrics import (
    MAX_DETS, coco_map, coco_style_ap, confusion_matrix, detection_report, greedy_match, iou_matrix, match_class, pair,
    pr_curve, voc_ap,
)


def record(name, boxes, labels, scores=None):
    return ImageRecord(name, 200, 200, np.asarray(boxes, float).reshape(-1, 4), np.asarray(labels, np.int64),
                       scores=None if scores is None else np.asarray(scores, float))


def test_voc_ap_hand_computed():
    # 3 ground-truth cells; 5 detections in score order: TP, FP, TP, FP, TP
    gt = AnnotationSet(["cell"], [record("a.png", [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [0, 0, 0])])
    pred = AnnotationSet(["cell"], [record("a.png", [[0, 0, 10, 10], [100, 100, 110, 110], [20, 20, 30, 30],
                                                     [120, 120, 130, 130], [40, 40, 50, 50]],
                                           [0] * 5, [0.9, 0.8, 0.7, 0.6, 0.5])])
    report = detection_report(gt, pred)
    # precision at recall 1/3, 2/3, 3/3 is 1, 2/3, 3/5; all-point AP = (1 + 2/3 + 3/5) / 3
    assert report["per_class"]["cell"]["AP50"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3, abs=1e-12)
    assert report["mAP50"] == report["per_class"]["cell"]["AP50"]
    assert voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_a_box_is_matched_once_and_iou_threshold_applies():
    gt = AnnotationSet(["cell"], [record("a.png", [[0, 0, 10, 10]], [0])])
    pred = AnnotationSet(["cell"], [record("a.png", [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 4]],
                                           [0, 0, 0], [0.9, 0.8, 0.95])])
    _, tp, n_gt = match_class(pair(gt, pred), 0, 0.5)
    assert n_gt == 1 and tp.tolist() == [False, True, False]  # IoU 0.4 misses; the duplicate is a FP



def _box_iou(a, b):
    """torchvision's IoU, the maintained implementation ours is checked against."""
    import torch
    from torchvision.ops import box_iou

    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    return box_iou(torch.from_numpy(np.ascontiguousarray(a)), torch.from_numpy(np.ascontiguousarray(b))).numpy()


def test_iou_matrix_is_torchvisions_box_iou_bit_for_bit_and_zero_for_two_degenerate_boxes():
    rng = np.random.default_rng(7)
    for n, m in [(0, 4), (3, 0), (1, 1), (17, 9), (250, 60)]:
        xy = rng.uniform(0, 640, (n + m, 2))
        wh = rng.choice([0.0, 0.5, 3.0, 40.0], size=(n + m, 2)) * rng.uniform(0.5, 1.5, (n + m, 2))
        boxes = np.concatenate([xy, xy + wh], 1)  # some of zero width or height, as BCCD has two
        a, b = boxes[:n], boxes[n:]
        ours, theirs = iou_matrix(a, b), _box_iou(a, b)
        assert ours.dtype == np.float64 and ours.shape == (n, m) and np.isfinite(ours).all()
        both_degenerate = np.isnan(theirs)  # 0/0 in box_iou: two zero-area boxes
        assert np.array_equal(ours[~both_degenerate], theirs[~both_degenerate])
        assert (ours[both_degenerate] == 0).all()


def test_two_zero_area_boxes_overlap_by_zero_not_nan():
    """box_iou gives them 0/0 = NaN; a NaN would sort past the threshold check of the classifier's cell pairing
    (``paired_cells``) and pair two degenerate boxes."""
    point = [5.0, 5.0, 5.0, 5.0]
    ious = iou_matrix(np.array([point, [0, 0, 10, 10]]), np.array([point, [0, 0, 10, 10]]))
    assert ious.tolist() == [[0.0, 0.0], [0.0, 1.0]]
    assert greedy_match(ious, 0.5).tolist() == [-1, 1]


def test_the_evaluator_runs_without_torch():
    """``bloodcell evaluate detection`` starts torch-free; the evaluator must not pull torch in (its import costs
    more than evaluating a 49-image split)."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from napari_bloodcell.core.io.records import AnnotationSet, ImageRecord\n"
            "from napari_bloodcell.core.metrics import confusion_matrix, detection_report\n"
            "gt = AnnotationSet(['cell'], [ImageRecord('a.png', 50, 50, np.array([[0., 0, 10, 10]]), np.array([0]))])\n"
            "pred = AnnotationSet(['cell'], [ImageRecord('a.png', 50, 50, np.array([[1., 1, 10, 10]]), np.array([0]),"
            " scores=np.array([0.9]))])\n"
            "assert detection_report(gt, pred)['mAP50'] == 1.0 and confusion_matrix(gt, pred)['matrix'][0][0] == 1\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

def random_sets(seed: int, n_images: int = 12):
    rng = np.random.default_rng(seed)
    classes = ["WBC", "RBC", "Platelets"]
    gts, preds = [], []
    for i in range(n_images):
        n = rng.integers(0, 15)
        xy = rng.uniform(0, 150, (n, 2))
        wh = rng.uniform(8, 50, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        labels = rng.integers(0, 3, n)
        gts.append(record(f"im{i}.png", boxes, labels))
        keep = rng.random(n) < 0.8
        jitter = boxes[keep] + rng.normal(0, 4, (keep.sum(), 4))
        jitter = np.concatenate([np.minimum(jitter[:, :2], jitter[:, 2:] - 2), jitter[:, 2:]], 1)
        extra_xy = rng.uniform(0, 150, (rng.integers(0, 8), 2))
        extra = np.concatenate([extra_xy, extra_xy + rng.uniform(8, 50, extra_xy.shape)], 1)
        pboxes = np.concatenate([jitter, extra])
        plabels = np.concatenate([np.where(rng.random(keep.sum()) < 0.85, labels[keep], rng.integers(0, 3, keep.sum())),
                                  rng.integers(0, 3, len(extra))])
        preds.append(record(f"im{i}.png", pboxes, plabels, rng.random(len(pboxes))))
    return AnnotationSet(classes, gts), AnnotationSet(["RBC", "WBC", "Platelets"], [
        # the predictions list classes in another order: pairing is by name
        ImageRecord(p.file_name, 200, 200, p.boxes, np.array([1, 0, 2])[p.labels], scores=p.scores) for p in preds])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_own_matching_agrees_with_pycocotools(seed):
    gt, pred = random_sets(seed)
    p = pair(gt, pred)
    coco = coco_map(p)
    per_iou = []
    for t in np.linspace(0.5, 0.95, 10):
        aps = []
        for c in range(3):
            _, tp, n_gt = match_class(p, c, t, max_dets=MAX_DETS)
            if n_gt:
                aps.append(coco_style_ap(*pr_curve(tp, n_gt)))
        per_iou.append(np.mean(aps))
    assert per_iou[0] == pytest.approx(coco["mAP50"], abs=1e-3)
    assert np.mean(per_iou) == pytest.approx(coco["mAP"], abs=1e-3)
    assert 0.05 < coco["mAP"] < coco["mAP50"] < 1  # a non-trivial case


def test_confusion_matrix_counts_misses_and_false_detections():
    gt = AnnotationSet(["WBC", "RBC"], [record("a.png", [[0, 0, 50, 50], [60, 60, 90, 90], [100, 100, 130, 130]],
                                                [0, 1, 1])])
    pred = AnnotationSet(["WBC", "RBC"], [record("a.png", [[0, 0, 50, 50], [60, 60, 90, 90], [150, 150, 180, 180],
                                                           [100, 100, 130, 130]], [0, 0, 1, 1], [0.9, 0.8, 0.7, 0.2])])
    cm = confusion_matrix(gt, pred, score=0.5)
    assert cm["rows"] == ["WBC", "RBC", "background"] and cm["columns"] == ["WBC", "RBC", "missed"]
    assert cm["matrix"] == [[1, 0, 0], [1, 0, 1], [0, 1, 0]]


def test_plots_are_written(tmp_path):
    from napari_bloodcell.core.plots import plot_confusion, plot_pr_curves

    gt, pred = random_sets(3)
    written = plot_pr_curves(detection_report(gt, pred), tmp_path)
    written.append(plot_confusion(confusion_matrix(gt, pred), tmp_path))
    assert {w.name for w in written} >= {"pr_all.png", "pr_WBC.png", "confusion_matrix.png"}
    assert all(w.stat().st_size > 5000 and w.read_bytes()[:4] == b"\x89PNG" for w in written)
