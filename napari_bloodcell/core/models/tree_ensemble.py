"""Gradient-boosted trees stored as plain tensors, so a scikit-learn model ships and loads with
``torch.load(weights_only=True)`` instead of pickle (which could run code).

:func:`export_hist_gradient_boosting` reads a fitted ``HistGradientBoostingClassifier``'s trees (numeric splits
only) into arrays: per tree the split feature, threshold, missing-value direction, children and leaf values.
:func:`predict_proba` walks them in NumPy, level by level for every sample at once; a test checks it against
scikit-learn's own ``predict_proba``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

FORMAT = "napari-bloodcell/tree-ensemble"


def export_hist_gradient_boosting(model) -> dict[str, Any]:
    """The fitted classifier's trees as tensors (reads scikit-learn's ``_predictors``, its documented-in-code
    structure; categorical splits are refused)."""
    trees = []
    for iteration in model._predictors:
        for k, predictor in enumerate(iteration):
            nodes = predictor.nodes
            if "is_categorical" in nodes.dtype.names and nodes["is_categorical"].any():
                raise ValueError("categorical splits are not supported")
            trees.append((k, nodes))
    n_nodes = max(len(n) for _, n in trees)

    def pad(field: str, dtype, fill) -> torch.Tensor:
        arr = np.full((len(trees), n_nodes), fill, dtype=dtype)
        for i, (_, nodes) in enumerate(trees):
            arr[i, : len(nodes)] = nodes[field]
        return torch.from_numpy(arr)

    baseline = np.asarray(model._baseline_prediction, np.float64).reshape(-1)
    return {
        "format": FORMAT, "version": 1,
        "classes": torch.as_tensor(np.asarray(model.classes_, np.int64)),
        "baseline": torch.from_numpy(baseline),
        "tree_class": torch.as_tensor([k for k, _ in trees], dtype=torch.int64),
        "feature": pad("feature_idx", np.int64, 0), "threshold": pad("num_threshold", np.float64, 0.0),
        "missing_left": pad("missing_go_to_left", np.bool_, True), "left": pad("left", np.int64, 0),
        "right": pad("right", np.int64, 0), "is_leaf": pad("is_leaf", np.bool_, True),
        "value": pad("value", np.float64, 0.0), "depth": int(max(int(n["depth"].max()) for _, n in trees)),
    }


def raw_scores(trees: dict[str, Any], X: np.ndarray) -> np.ndarray:
    """(N, K) summed tree outputs plus the baseline (K = 1 for two classes, as scikit-learn's binary loss)."""
    X = np.asarray(X, np.float64)
    baseline = trees["baseline"].numpy()
    k = len(baseline)
    out = np.tile(baseline, (len(X), 1))
    feature, threshold = trees["feature"].numpy(), trees["threshold"].numpy()
    missing_left, left, right = trees["missing_left"].numpy(), trees["left"].numpy(), trees["right"].numpy()
    is_leaf, value, tree_class = trees["is_leaf"].numpy(), trees["value"].numpy(), trees["tree_class"].numpy()
    rows = np.arange(len(X))
    for t in range(len(tree_class)):
        node = np.zeros(len(X), np.int64)
        for _ in range(int(trees["depth"]) + 1):
            leaf = is_leaf[t, node]
            if leaf.all():
                break
            x = X[rows, feature[t, node]]
            go_left = np.where(np.isnan(x), missing_left[t, node], x <= threshold[t, node])
            node = np.where(leaf, node, np.where(go_left, left[t, node], right[t, node]))
        out[:, tree_class[t] % k] += value[t, node]
    return out


def predict_proba(trees: dict[str, Any], X: np.ndarray) -> np.ndarray:
    """(N, C) class probabilities (softmax of the raw scores; logistic for two classes)."""
    raw = raw_scores(trees, X)
    if raw.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-raw[:, 0]))
        return np.column_stack([1 - p, p])
    raw = raw - raw.max(1, keepdims=True)
    e = np.exp(raw)
    return e / e.sum(1, keepdims=True)
