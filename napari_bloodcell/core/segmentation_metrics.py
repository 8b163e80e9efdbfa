"""Segmentation scores per label: Dice, the 95th-percentile Hausdorff distance in millimetres, volumes in mm³.

HD95 follows the usual definition (MONAI's and the MSD challenge's): the surfaces of both masks (voxels of the mask
that touch the outside through a face), the distance of every surface voxel of one to the nearest surface voxel of
the other, both directions pooled, 95th percentile. Distances come from scipy's exact Euclidean distance transform
with the voxel spacing, so anisotropic voxels are measured in millimetres. A label absent from both masks has
Dice 1 and HD95 0; absent from exactly one, Dice 0 and HD95 undefined (``nan``, reported as missing).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    a, b = np.asarray(pred, bool), np.asarray(truth, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face-neighbour outside it (the volume's edge counts as outside)."""
    mask = np.asarray(mask, bool)
    inner = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1),
                                   border_value=0)
    return mask & ~inner


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distances (mm) from each surface voxel of ``a`` to the surface of ``b``."""
    sa, sb = surface(a), surface(b)
    to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    return to_b[sa]


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...] = (1.0, 1.0, 1.0)) -> float:
    a, b = np.asarray(pred, bool), np.asarray(truth, bool)
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return float("nan")
    d = np.concatenate([surface_distances(a, b, spacing), surface_distances(b, a, spacing)])
    return float(np.percentile(d, 95))


def label_volumes(labels: np.ndarray, spacing: tuple[float, ...], names: dict[int, str] | None = None
                  ) -> list[dict[str, Any]]:
    """Voxels and mm³ per non-zero label value (what the widget shows)."""
    voxel_mm3 = float(np.prod(spacing))
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    names = names or {}
    return [{"label": int(v), "name": names.get(int(v), f"label {int(v)}"), "voxels": int(c),
             "mm3": float(c) * voxel_mm3} for v, c in zip(values, counts) if v != 0]


def score_case(pred: np.ndarray, truth: np.ndarray, labels: list[int], spacing: tuple[float, ...]
               ) -> dict[int, dict[str, float]]:
    if pred.shape != truth.shape:
        from .errors import BloodcellInputError

        raise BloodcellInputError(f"prediction has shape {pred.shape}, ground truth {truth.shape}")
    return {v: {"dice": dice(pred == v, truth == v), "hd95": hd95(pred == v, truth == v, spacing)} for v in labels}


def summarise(per_case: dict[str, dict[int, dict[str, float]]], names: dict[int, str]) -> dict[str, Any]:
    """Mean, standard deviation and median of Dice and HD95 per label over cases; HD95 means skip ``nan``."""
    labels = sorted({v for scores in per_case.values() for v in scores})
    out: dict[str, Any] = {"cases": len(per_case), "labels": {}}
    for v in labels:
        d = np.array([s[v]["dice"] for s in per_case.values() if v in s])
        h = np.array([s[v]["hd95"] for s in per_case.values() if v in s])
        finite = h[np.isfinite(h)]
        out["labels"][names.get(v, f"label {v}")] = {
            "label": v, "dice_mean": float(d.mean()), "dice_sd": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
            "dice_median": float(np.median(d)),
            "hd95_mean": float(finite.mean()) if len(finite) else None,
            "hd95_median": float(np.median(finite)) if len(finite) else None, "hd95_missing": int(len(h) - len(finite)),
        }
    dices = [m["dice_mean"] for m in out["labels"].values()]
    out["mean_dice"] = float(np.mean(dices)) if dices else float("nan")
    out["per_case"] = {case: {names.get(v, f"label {v}"): s for v, s in scores.items()}
                       for case, scores in per_case.items()}
    return out
