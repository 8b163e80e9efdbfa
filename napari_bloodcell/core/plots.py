"""PNG plots of evaluation results (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Render ``fig`` and write it atomically, refusing to replace an existing file (an earlier report's plots
    are the user's)."""
    import io

    from .atomic import atomic_write_bytes

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png")
    finally:
        _pyplot().close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "class"


def plot_pr_curves(report: dict[str, Any], folder: str | Path) -> list[Path]:
    """One precision-recall PNG per class and one with every class, from :func:`..metrics.detection_report`."""
    plt = _pyplot()
    folder = Path(folder)
    written = []
    curves = report["_curves"]
    fig_all, ax_all = plt.subplots(figsize=(6, 5), dpi=110)
    for name, (recall, precision) in curves.items():
        ap = report["per_class"][name]["AP50"]
        if math.isnan(ap):
            continue
        label = f"{name} (AP {ap:.3f}, n={report['per_class'][name]['n_gt']})"
        for ax in (ax_all,):
            ax.plot(np.concatenate([[0], recall]), np.concatenate([[1], precision]), label=label)
        fig, ax = plt.subplots(figsize=(5, 4), dpi=110)
        ax.plot(np.concatenate([[0], recall]), np.concatenate([[1], precision]))
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=label)
        ax.grid(alpha=0.3)
        path = folder / f"pr_{_safe(name)}.png"
        fig.tight_layout()
        save_figure(fig, path)
        written.append(path)
    ax_all.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
               title=f"Precision-recall at IoU {report['iou']:g}; mAP {report['mAP50']:.3f}")
    ax_all.grid(alpha=0.3)
    ax_all.legend(loc="lower left", fontsize=8)
    fig_all.tight_layout()
    path = folder / "pr_all.png"
    save_figure(fig_all, path)
    return [path] + written


def plot_confusion(cm: dict[str, Any], folder: str | Path) -> Path:
    """The detection confusion matrix (counts) as a heat map with the numbers written in."""
    plt = _pyplot()
    m = np.asarray(cm["matrix"])
    fig, ax = plt.subplots(figsize=(1.2 * m.shape[1] + 2, 1.0 * m.shape[0] + 1.5), dpi=110)
    ax.imshow(np.log1p(m), cmap="Blues")
    ax.set_xticks(range(m.shape[1]), cm["columns"], rotation=30, ha="right")
    ax.set_yticks(range(m.shape[0]), cm["rows"])
    ax.set(xlabel="predicted", ylabel="true",
           title=f"Detections at IoU {cm['iou']:g}, score >= {cm['score']:g}")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if m[i, j] > m.max() / 2 else "black")
    fig.tight_layout()
    path = Path(folder) / "confusion_matrix.png"
    save_figure(fig, path)
    return path


def plot_confusion_normalised(report: dict[str, Any], folder: str | Path, title: str = "") -> Path:
    """Paper 000's confusion matrix: rows (true class) normalised to 1, with the counts in brackets."""
    plt = _pyplot()
    m = np.asarray(report["confusion_normalised"], dtype=float)
    counts = np.asarray(report["confusion"])
    names = report["classes"]
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2.2, 1.1 * len(names) + 1.8), dpi=110)
    ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    acc = report["accuracy"]["value"]
    ax.set(xlabel="predicted", ylabel="true", title=title or f"{report['n']} cells, accuracy {acc:.3f}")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.2f}\n({counts[i, j]})", ha="center", va="center", fontsize=8,
                    color="white" if m[i, j] > 0.5 else "black")
    fig.tight_layout()
    path = Path(folder) / "confusion_normalised.png"
    save_figure(fig, path)
    return path


def plot_roc(y_true: np.ndarray, scores: np.ndarray, names: list[str], folder: str | Path,
             multilabel: bool = False) -> Path:
    """One-vs-rest ROC curves (scikit-learn's roc_curve), one line per class or label, AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    y = np.asarray(y_true)
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=110)
    for i, name in enumerate(names):
        yi = (y[:, i] > 0.5) if multilabel else (y == i)
        if 0 < yi.sum() < len(yi):
            fpr, tpr, _ = roc_curve(yi, scores[:, i])
            ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(yi, scores[:, i]):.3f}, n={int(yi.sum())})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.02), title="ROC, one vs rest")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(folder) / "roc.png"
    save_figure(fig, path)
    return path
