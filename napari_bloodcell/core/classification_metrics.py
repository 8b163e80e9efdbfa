"""Classification metrics as papers 000, 001 and 003 report them, with confidence intervals (scikit-learn).

Single-label: accuracy, and per class TP/TN/FP/FN, precision, recall (sensitivity), specificity, F1 and
one-vs-rest AUC; Cohen's kappa; the confusion matrix in counts and row-normalised (paper 000). Multi-label (paper
001): per-label AUC, precision, recall and specificity at the 0.5 threshold, and exact-match (subset) accuracy.

Proportions (accuracy, precision, recall, specificity, exact match) get exact Clopper-Pearson intervals, which
stay honest for the small classes of a blood film (16 monocytes); AUC, F1 and kappa, which are not proportions, get
percentile bootstrap intervals over cells (``n_boot`` resamples, fixed seed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .differential import exact_interval
from .errors import BloodcellInputError

N_BOOT = 1000


def _bootstrap(metric: Callable[[np.ndarray], float], n: int, n_boot: int, seed: int,
               confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``metric(indices)`` over resamples; resamples where it is undefined are skipped."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        v = metric(rng.integers(0, n, n))
        if np.isfinite(v):
            values.append(v)
    if len(values) < max(10, n_boot // 10):
        return (float("nan"), float("nan"))
    alpha = (1 - confidence) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    """One-vs-rest AUC as the Mann-Whitney statistic (ties count half): scikit-learn's ``roc_auc_score`` gives
    the point estimates; this equal and vectorised form serves the thousand bootstrap resamples."""
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = np.asarray(s)[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _confusion(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(y * k + pred, minlength=k * k).reshape(k, k)


def _kappa(cm: np.ndarray) -> float:
    n = cm.sum()
    po = np.trace(cm) / n
    pe = (cm.sum(0) * cm.sum(1)).sum() / n**2
    return float((po - pe) / (1 - pe)) if pe < 1 else float("nan")


def _f1(cm: np.ndarray, i: int) -> float:
    tp, fp, fn = cm[i, i], cm[:, i].sum() - cm[i, i], cm[i].sum() - cm[i, i]
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0


def _proportion(k: int, n: int) -> dict[str, Any]:
    lo, hi = exact_interval(int(k), int(n)) if n else (float("nan"), float("nan"))
    return {"value": k / n if n else float("nan"), "ci95": [lo / 100, hi / 100], "k": int(k), "n": int(n)}


def classification_report(y_true: np.ndarray, scores: np.ndarray, classes: list[str], n_boot: int = N_BOOT,
                          seed: int = 0) -> dict[str, Any]:
    """Metrics of single-label predictions; ``scores`` are (cells, classes) probabilities or decision values."""
    from sklearn.metrics import (
        cohen_kappa_score,
        confusion_matrix,
        f1_score,
        roc_auc_score,
    )

    y = np.asarray(y_true, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    k = len(classes)
    if s.ndim != 2 or s.shape != (len(y), k):
        raise BloodcellInputError(f"scores must be (cells, {k}); got {s.shape} for {len(y)} cells")
    if len(y) == 0:
        raise BloodcellInputError("no cells to score")
    pred = s.argmax(1)
    cm = confusion_matrix(y, pred, labels=list(range(k)))
    rows = cm.sum(1, keepdims=True)
    per_class = {}
    for i, name in enumerate(classes):
        tp, fn, fp = int(cm[i, i]), int(rows[i, 0] - cm[i, i]), int(cm[:, i].sum() - cm[i, i])
        tn = int(len(y) - tp - fn - fp)
        yi = (y == i).astype(int)
        f1 = lambda idx, i=i: _f1(_confusion(y[idx], pred[idx], k), i)
        auc = lambda idx, yi=yi, i=i: _auc(yi[idx], s[idx, i])
        per_class[name] = {
            "support": int(yi.sum()), "TP": tp, "TN": tn, "FP": fp, "FN": fn,
            "precision": _proportion(tp, tp + fp), "recall": _proportion(tp, tp + fn),
            "specificity": _proportion(tn, tn + fp),
            "f1": {"value": float(f1_score(y == i, pred == i, zero_division=0)),
                   "ci95": list(_bootstrap(f1, len(y), n_boot, seed))},
            "auc": {"value": float(roc_auc_score(yi, s[:, i])) if 0 < yi.sum() < len(y) else float("nan"),
                    "ci95": list(_bootstrap(auc, len(y), n_boot, seed))},
        }
    kappa = lambda idx: _kappa(_confusion(y[idx], pred[idx], k))
    aucs = [v["auc"]["value"] for v in per_class.values()]
    return {
        "n": len(y), "classes": list(classes),
        "accuracy": _proportion(int((pred == y).sum()), len(y)),
        "kappa": {"value": float(cohen_kappa_score(y, pred, labels=list(range(k)))),
                  "ci95": list(_bootstrap(kappa, len(y), n_boot, seed))},
        "macro_f1": float(f1_score(y, pred, labels=list(range(k)), average="macro", zero_division=0)),
        "macro_auc": float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan"),
        "per_class": per_class,
        "confusion": cm.tolist(),
        "confusion_normalised": np.divide(cm, np.maximum(rows, 1)).round(4).tolist(),
    }


def multilabel_report(y_true: np.ndarray, probabilities: np.ndarray, labels: list[str], threshold: float = 0.5,
                      n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Per-label AUC and threshold metrics, and exact-match accuracy (every label right)."""
    y = np.asarray(y_true) > 0.5
    p = np.asarray(probabilities, dtype=np.float64)
    if p.shape != y.shape or p.ndim != 2 or p.shape[1] != len(labels):
        raise BloodcellInputError(f"labels and probabilities must both be (cells, {len(labels)}); got {y.shape} "
                                  f"and {p.shape}")
    hit = p >= threshold
    per_label = {}
    for j, name in enumerate(labels):
        yj, hj = y[:, j], hit[:, j]
        tp, fp, fn = int((yj & hj).sum()), int((~yj & hj).sum()), int((yj & ~hj).sum())
        tn = int(len(yj) - tp - fp - fn)
        auc = lambda idx, j=j: _auc(y[idx, j].astype(int), p[idx, j])
        per_label[name] = {
            "support": int(yj.sum()), "TP": tp, "TN": tn, "FP": fp, "FN": fn,
            "precision": _proportion(tp, tp + fp), "recall": _proportion(tp, tp + fn),
            "specificity": _proportion(tn, tn + fp),
            "auc": {"value": auc(np.arange(len(y))), "ci95": list(_bootstrap(auc, len(y), n_boot, seed))},
        }
    exact = int((hit == y).all(1).sum())
    return {"n": len(y), "labels": list(labels), "threshold": threshold,
            "exact_match": _proportion(exact, len(y)),
            "hamming_loss": float((hit != y).mean()),
            "per_label": per_label}


def screen_report(abnormal: np.ndarray, probability: np.ndarray, n_boot: int = N_BOOT, seed: int = 0
                  ) -> dict[str, Any]:
    """The abnormal-cell screen (paper 001): accuracy at 0.5, sensitivity, specificity and AUC."""
    y = np.asarray(abnormal).astype(bool)
    hit = np.asarray(probability) >= 0.5
    auc = lambda idx: _auc(y[idx].astype(int), np.asarray(probability)[idx])
    return {"n": len(y), "accuracy": _proportion(int((hit == y).sum()), len(y)),
            "sensitivity": _proportion(int((hit & y).sum()), int(y.sum())),
            "specificity": _proportion(int((~hit & ~y).sum()), int((~y).sum())),
            "auc": {"value": auc(np.arange(len(y))), "ci95": list(_bootstrap(auc, len(y), n_boot, seed))}}


def summary_line(report: dict[str, Any]) -> str:
    """One line for logs and the CLI."""
    if "exact_match" in report:
        aucs = ", ".join(f"{k} {v['auc']['value']:.3f}" for k, v in report["per_label"].items())
        return f"exact match {report['exact_match']['value']:.3f} on {report['n']} cells; AUC {aucs}"
    acc = report["accuracy"]
    return (f"accuracy {acc['value']:.3f} [{acc['ci95'][0]:.3f}, {acc['ci95'][1]:.3f}], kappa "
            f"{report['kappa']['value']:.3f}, macro F1 {report['macro_f1']:.3f}, macro AUC "
            f"{report['macro_auc']:.3f} on {report['n']} cells")


def paired_cells(gt, pred, iou: float = 0.5) -> dict[str, Any]:
    """Ground-truth cells and the class probabilities a classifier wrote on the predicted box over each.

    Images pair by file stem and boxes by IoU (at least ``iou``, best pair first); the classes are the keys of
    the predictions' ``class_probabilities`` (as ``bloodcell classify`` writes them). Ground-truth boxes of other
    classes (e.g. red cells when white-cell types are scored) are not counted; those with no predicted box over
    them are reported as missed.
    """
    from pathlib import Path

    from .metrics import iou_matrix

    by_stem = {Path(r.file_name).stem: r for r in pred.images}
    classes: list[str] = []
    for rec in pred.images:
        for a in rec.attribute_list():
            classes += [c for c in a.get("class_probabilities", {}) if c not in classes]
    if not classes:
        raise BloodcellInputError("the predictions carry no class_probabilities (make them with bloodcell classify)")
    y, rows, missed, images = [], [], 0, 0
    for g in gt.images:
        p = by_stem.get(Path(g.file_name).stem)
        keep = np.array([gt.classes[int(lab)] in classes for lab in g.labels], dtype=bool)
        if p is None or not keep.any():
            missed += int(keep.sum()) if p is None else 0
            continue
        images += 1
        gi = np.flatnonzero(keep)
        attrs = p.attribute_list()
        scored = np.array([bool(a.get("class_probabilities")) for a in attrs], dtype=bool)
        pj = np.flatnonzero(scored)
        m = iou_matrix(g.boxes[gi], p.boxes[pj]) if len(pj) else np.zeros((len(gi), 0))
        taken_g, taken_p = set(), set()
        for flat in np.argsort(-m, axis=None):
            a, b = divmod(int(flat), m.shape[1])
            if m[a, b] < iou:
                break
            if a in taken_g or b in taken_p:
                continue
            taken_g.add(a)
            taken_p.add(b)
            probs = attrs[pj[b]]["class_probabilities"]
            y.append(classes.index(gt.classes[int(g.labels[gi[a]])]))
            rows.append([float(probs.get(c, 0.0)) for c in classes])
        missed += len(gi) - len(taken_g)
    if not y:
        raise BloodcellInputError(f"no ground-truth cell of the classes {classes} has a classified box over it")
    return {"classes": classes, "y": np.array(y), "scores": np.array(rows), "missed": missed, "images": images}
