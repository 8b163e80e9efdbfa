"""Red-cell morphology from measured cell features + gradient boosting, on the same by-photo split as the CNN runs.

Why: the CNN runs (`chula_morphology.py`) lose absolute size (every crop is scaled to its box), and size defines
macrocytes and microcytes; the morphology types are largely size, shape, outline and pallor, which regionprops
measure directly and which do not depend on a photo's stain as much as pixels do. This is a measured baseline,
not a shipped model.

    python benchmarks/chula_features.py --cache /tmp/chula_boxes.npz     # after `chula_morphology.py grow`
    python benchmarks/chula_features.py --cache /tmp/chula_boxes.npz --save napari_bloodcell/models/starter_morphology.pt

Writes benchmarks/results/chula_morphology_features.json; ``--save`` also writes the fitted model (the one measured,
trained on the training photos only) as a weights-only tree-ensemble checkpoint, the shipped starter model.
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

from napari_bloodcell.core.morphology_features import cell_features as field_features  # noqa: E402


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


def save_model(model, report: dict, path: Path) -> None:
    """The fitted trees as a weights-only checkpoint, with the validation figures it was measured at, and its
    entry (SHA-256) in napari_bloodcell/models/bundled.json when written there."""
    from napari_bloodcell.core.models.bundled import MANIFEST, record_bundled
    from napari_bloodcell.core.models.checkpoints import save_checkpoint
    from napari_bloodcell.core.models.tree_ensemble import export_hist_gradient_boosting
    from napari_bloodcell.core.morphology_features import FEATURES
    from napari_bloodcell.core.red_cell_typing import FORMAT

    metrics = {"accuracy": report["accuracy"]["value"], "accuracy_ci95": report["accuracy"]["ci95"],
               "macro_f1": report["macro_f1"], "screen_auc": report["screen"]["auc"]["value"]
               if isinstance(report["screen"].get("auc"), dict) else report["screen"].get("auc"),
               "split": "chula_rbc12 by photo, StratifiedGroupKFold fold 0 (377 train / 91 validation photos)"}
    ckpt = {"format": FORMAT, "version": 1, "classes": list(TYPES), "features": list(FEATURES),
            "trees": export_hist_gradient_boosting(model), "metrics": metrics,
            "command": "python " + " ".join(sys.argv), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    save_checkpoint(ckpt, path, exist="replace")
    if path.resolve().parent == MANIFEST.parent:
        record_bundled({"name": "starter-morphology", "task": "morphology", "file": path.name,
                        "card": "docs/models/starter_morphology.md", "arch": "hist_gradient_boosting",
                        "classes": list(TYPES),
                        "summary": "red-cell morphology (13 Chula RBC-12 types) from 26 measured cell features",
                        "metrics": metrics})
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    from napari_bloodcell.core.classification_metrics import classification_report, screen_report

    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default="/tmp/chula_boxes.npz")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", type=Path, help="write the fitted model as a morphology checkpoint here")
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
    if args.save:
        save_model(model, report, args.save)
    print(json.dumps({k: report[k] for k in ("accuracy", "macro_f1") if k in report}, default=float),
          "screen AUC", report["screen"].get("auc"), f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
