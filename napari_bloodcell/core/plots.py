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
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    ax_all.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
               title=f"Precision-recall at IoU {report['iou']:g}; mAP {report['mAP50']:.3f}")
    ax_all.grid(alpha=0.3)
    ax_all.legend(loc="lower left", fontsize=8)
    fig_all.tight_layout()
    path = folder / "pr_all.png"
    fig_all.savefig(path)
    plt.close(fig_all)
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
    fig.savefig(path)
    plt.close(fig)
    return path
