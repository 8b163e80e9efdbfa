"""Red-cell morphology typing with a stored tree ensemble on measured features (the shipped starter model).

A cell is given by its centre point; its box is grown from its own outline (:func:`..point_cells.grow_boxes`,
the way the model's training cells were made from Chula RBC-12's points), its 26 features measured
(:mod:`..morphology_features`) and typed by gradient-boosted trees stored as tensors (:mod:`.models.tree_ensemble`).
Cells detected as boxes are typed from their box centres, so a detector's box shape does not change the features.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BloodcellInputError
from .morphology_features import FEATURES

FORMAT = "napari-bloodcell/morphology"


@dataclasses.dataclass
class MorphologyModel:
    classes: list[str]
    trees: dict[str, Any]
    features: tuple[str, ...]
    model_id: str
    metrics: dict[str, Any]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """(N, len(classes)) probabilities; classes the trees never saw get 0."""
        from .models.tree_ensemble import predict_proba

        proba = np.zeros((len(X), len(self.classes)))
        if len(X):
            proba[:, self.trees["classes"].numpy()] = predict_proba(self.trees, X)
        return proba


def load_morphology_model(model: str | Path = "bundled") -> MorphologyModel:
    """``bundled`` (the shipped starter model) or a morphology checkpoint file, loaded weights-only."""
    from .models.bundled import resolve
    from .models.checkpoints import file_digest, safe_torch_load

    path = Path(resolve(model, "morphology")[0])
    ckpt = safe_torch_load(path, "morphology model")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise BloodcellInputError(f"not a {FORMAT} checkpoint", path)
    try:
        classes = [str(c) for c in ckpt["classes"]]
        trees = dict(ckpt["trees"])
        features = tuple(str(f) for f in ckpt["features"])
        if features != FEATURES:
            raise BloodcellInputError(f"this morphology model was trained on other features ({len(features)} "
                                      f"named, {len(FEATURES)} measured here); retrain it with this version", path)
        n = int(trees["feature"].shape[0])
        if int(trees["feature"].max()) >= len(features) or int(trees["classes"].max()) >= len(classes) or not n:
            raise ValueError("trees refer to features or classes the model does not list")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, BloodcellInputError):
            raise
        raise BloodcellInputError(f"malformed morphology model ({exc})", path) from None
    return MorphologyModel(classes, trees, features, f"morphology:{path.stem}@{file_digest(path, 8)}",
                           dict(ckpt.get("metrics", {})))


def type_cells(model: MorphologyModel, image: np.ndarray, points: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per centre point: the type index (into ``model.classes``), the probabilities, and the grown box."""
    from .io.rgb import as_rgb
    from .morphology_features import cell_features
    from .point_cells import grow_boxes

    rgb = as_rgb(np.asarray(image))
    points = np.asarray(points, np.float64).reshape(-1, 2)
    if not len(points):
        return np.zeros(0, np.int64), np.zeros((0, len(model.classes))), np.zeros((0, 4))
    boxes = grow_boxes(rgb, points)
    proba = model.predict_proba(cell_features(rgb, points, boxes))
    return proba.argmax(1).astype(np.int64), proba, boxes


def box_centres(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.column_stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2])
