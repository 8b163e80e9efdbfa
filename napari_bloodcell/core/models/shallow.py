"""scikit-learn models kept as plain arrays, so a checkpoint holding them loads with ``weights_only=True``.

Pickling a fitted estimator would make every checkpoint a program that runs on load; instead the fitted numbers
are copied out and evaluated here with numpy, and the tests check the results against scikit-learn's own
``decision_function`` / ``predict_proba`` on fixed data.

* :class:`LinearOvR`: paper 003's one-vs-rest linear SVM on standardised features (``StandardScaler`` +
  ``OneVsRestClassifier(LinearSVC)``).
* :class:`BoostedScreen`: paper 001's gradient-boosting screen (``GradientBoostingClassifier``, log-loss, binary)
  on the multi-label probabilities: the probability that a cell patch holds an abnormal cell.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch


@dataclasses.dataclass
class LinearOvR:
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    """(classes, features); a two-class fit keeps one row (the second class) and the first is its negation."""
    intercept: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, y: np.ndarray, n_classes: int, c: float = 1.0,
            class_weight: str | None = "balanced", seed: int = 0) -> LinearOvR:
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import LinearSVC

        scaler = StandardScaler().fit(features)
        svm = OneVsRestClassifier(LinearSVC(C=c, class_weight=class_weight, max_iter=20000, random_state=seed))
        svm.fit(scaler.transform(features), y)
        coef = np.stack([e.coef_.ravel() for e in svm.estimators_])
        intercept = np.array([float(np.ravel(e.intercept_)[0]) for e in svm.estimators_])
        if len(svm.classes_) != n_classes:
            raise ValueError(f"the training data hold {len(svm.classes_)} of the {n_classes} classes")
        return cls(scaler.mean_.copy(), scaler.scale_.copy(), coef, intercept)

    def decision(self, features: np.ndarray) -> np.ndarray:
        z = (np.asarray(features, np.float64) - self.mean) / self.scale
        d = z @ self.coef.T + self.intercept
        return np.concatenate([-d, d], 1) if self.coef.shape[0] == 1 else d

    def to_state(self) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> LinearOvR:
        return cls(**{f.name: state[f.name].numpy() for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class BoostedScreen:
    init: float
    """Raw (log-odds) score before the trees: the prior of the abnormal class."""
    learning_rate: float
    left: np.ndarray
    """(trees, nodes) child indices, -1 at leaves; padded trees repeat leaf 0."""
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray

    @classmethod
    def fit(cls, probabilities: np.ndarray, abnormal: np.ndarray, seed: int = 0, **params) -> BoostedScreen:
        from sklearn.ensemble import GradientBoostingClassifier

        y = np.asarray(abnormal, dtype=int)
        if len(set(y.tolist())) < 2:
            raise ValueError("the screen needs both normal and abnormal examples")
        gb = GradientBoostingClassifier(random_state=seed, **params).fit(probabilities, y)
        return cls.from_sklearn(gb)

    @classmethod
    def from_sklearn(cls, gb) -> BoostedScreen:
        trees = [est.tree_ for est in gb.estimators_[:, 0]]
        width = max(t.node_count for t in trees)

        def pad(values: list[np.ndarray], fill) -> np.ndarray:
            out = np.full((len(values), width), fill, dtype=np.asarray(values[0]).dtype)
            for i, v in enumerate(values):
                out[i, : len(v)] = v
            return out

        prior = gb.init_.class_prior_[1]
        return cls(float(np.log(prior / (1 - prior))), float(gb.learning_rate),
                   pad([t.children_left for t in trees], -1), pad([t.children_right for t in trees], -1),
                   pad([t.feature for t in trees], 0), pad([t.threshold for t in trees], 0.0),
                   pad([t.value[:, 0, 0] for t in trees], 0.0))

    def raw(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        n, t = len(x), self.left.shape[0]
        node = np.zeros((n, t), dtype=np.int64)
        tree = np.arange(t)[None, :]
        rows = np.arange(n)[:, None]
        for _ in range(self.left.shape[1]):
            left = self.left[tree, node]
            inner = left != -1
            if not inner.any():
                break
            go_left = x[rows, self.feature[tree, node]] <= self.threshold[tree, node]
            node = np.where(inner, np.where(go_left, left, self.right[tree, node]), node)
        return self.init + self.learning_rate * self.value[tree, node].sum(1)

    def probability(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.raw(x)))

    def to_state(self) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(np.asarray(v)) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> BoostedScreen:
        values = {f.name: state[f.name].numpy() for f in dataclasses.fields(cls)}
        values["init"], values["learning_rate"] = float(values["init"]), float(values["learning_rate"])
        return cls(**values)
