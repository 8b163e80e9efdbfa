"""Red-cell morphology from measured cell features + gradient boosting, on the same by-photo split as the CNN runs.

Why: the CNN runs (`chula_morphology.py`) lose absolute size (every crop is scaled to its box), and size defines
macrocytes and microcytes; the morphology types are largely size, shape, outline and pallor, which regionprops
measure directly and which do not depend on a photo's stain as much as pixels do. This is a measured baseline,
not a shipped model.

    python benchmarks/chula_features.py --cache /tmp/chula_boxes.npz     # after `chula_morphology.py grow`

Writes benchmarks/results/chula_morphology_features.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chula_morphology import RESULTS, TYPES, sample_sets  # noqa: E402

RINGS = 5


def field_features(image: np.ndarray, points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Per cell: absolute and relative size, shape of its region, outline roughness, and a radial darkness
    profile normalised by the field's background (pale centres, target centres, dense spherocytes)."""
    from skimage.measure import label, regionprops

    from napari_bloodcell.core.point_cells import foreground_mask

    green = image[..., 1].astype(np.float64)
    fg = foreground_mask(image)
    background = np.median(green[~fg]) if (~fg).any() else 255.0
    darkness = 1.0 - green / max(background, 1.0)
    labels = label(fg)
    sides = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    median_side = float(np.median(sides)) if len(sides) else 1.0
    yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    out = []
    for (x, y), b, side in zip(points, boxes, sides, strict=True):
        x1, y1, x2, y2 = (int(round(v)) for v in b)
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
        window = labels[y1:y2, x1:x2]
        own = labels[min(int(y), labels.shape[0] - 1), min(int(x), labels.shape[1] - 1)]
        region = (window == own) if own else fg[y1:y2, x1:x2]
        props = regionprops(region.astype(np.uint8))
        p = props[0] if props else None
        area = float(p.area) if p else 0.0
        shape = [area, float(p.perimeter) if p else 0, float(p.eccentricity) if p else 0,
                 float(p.solidity) if p else 0, float(p.extent) if p else 0,
                 float(p.axis_major_length) if p else 0, float(p.axis_minor_length) if p else 0]
        roughness = (shape[1] ** 2 / (4 * np.pi * area)) if area else 0.0
        radius = max(np.sqrt(area / np.pi), 2.0)
        r = np.hypot(xx[y1:y2, x1:x2] - x, yy[y1:y2, x1:x2] - y) / radius
        d = darkness[y1:y2, x1:x2]
        profile = [float(d[(r >= k / RINGS) & (r < (k + 1) / RINGS)].mean()) if ((r >= k / RINGS) & (r < (k + 1) / RINGS)).any()
                   else 0.0 for k in range(RINGS)]
        inside = d[region] if region.any() else d.ravel()
        colour = image[y1:y2, x1:x2][region].mean(0) / max(background, 1.0) if region.any() else np.zeros(3)
        out.append([side, side / median_side, x2 - x1, y2 - y1, max(x2 - x1, y2 - y1) / max(1, min(x2 - x1, y2 - y1)),
                    *shape, area / median_side ** 2, roughness, *profile, profile[0] - profile[-2],
                    float(inside.mean()), float(inside.std()), *colour.tolist()])
    return np.asarray(out, np.float64)


def features_of(sset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from napari_bloodcell.core.io.images import read_image
    from napari_bloodcell.core.io.rgb import as_rgb

    by_photo: dict[str, list[int]] = {}
    for k, s in enumerate(sset.samples):
        by_photo.setdefault(s.group, []).append(k)
    X = np.zeros((len(sset.samples), 0))
    rows: dict[int, np.ndarray] = {}
    for idx in by_photo.values():
        first = sset.samples[idx[0]]
        image = as_rgb(read_image(first.path))
        pts = np.asarray([sset.samples[k].ref["point"] for k in idx])
        boxes = np.asarray([sset.samples[k].box for k in idx])
        for k, f in zip(idx, field_features(image, pts, boxes), strict=True):
            rows[k] = f
    X = np.stack([rows[k] for k in range(len(sset.samples))])
    y = np.asarray([s.target for s in sset.samples], np.int64)
    groups = np.asarray([s.group for s in sset.samples])
    return X, y, groups


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    from napari_bloodcell.core.classification_metrics import classification_report, screen_report

    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="/tmp/chula_boxes.npz")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    train_set, val_set = sample_sets(Path(args.cache), multilabel=False)
    Xt, yt, _ = features_of(train_set)
    Xv, yv, _ = features_of(val_set)
    t_features = time.perf_counter() - t0
    model = HistGradientBoostingClassifier(max_iter=400, learning_rate=0.05, class_weight="balanced",
                                           l2_regularization=1.0, random_state=args.seed)
    model.fit(Xt, yt)
    proba = np.zeros((len(yv), len(TYPES)))
    proba[:, model.classes_] = model.predict_proba(Xv)
    report = classification_report(yv, np.log(np.clip(proba, 1e-9, 1)), list(TYPES))
    abnormal = yv != TYPES.index("normal")
    report["screen"] = screen_report(abnormal, 1.0 - proba[:, TYPES.index("normal")])
    report["model"] = "HistGradientBoostingClassifier on 26 measured features per cell (size, shape, outline, " \
                      "radial darkness profile, colour), class_weight=balanced"
    report["seconds"] = {"features": t_features, "total": time.perf_counter() - t0}
    report["cells"] = {"train": int(len(yt)), "val": int(len(yv))}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "chula_morphology_features.json").write_text(json.dumps(report, indent=1, default=float))
    print(json.dumps({k: report[k] for k in ("accuracy", "macro_f1") if k in report}, default=float),
          "screen AUC", report["screen"].get("auc"), f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
