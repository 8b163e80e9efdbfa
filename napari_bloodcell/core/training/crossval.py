"""k-fold cross-validation of a classifier recipe, folds grouped by image and stratified by class.

Paper 001 reports 5-fold cross-validation; the WBC benchmark uses it too because 270 cells make any single split
noisy. Each fold trains on the other folds: network recipes hold out a further 15% of the training images for
early stopping and the choice of the best epoch, so the test fold never steers training; the SVM has no epochs
and fits on the whole training part. The test folds' scores are pooled into one report (with confidence
intervals over all cells) and each fold's own accuracy is listed, so the spread between folds is visible.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator
from typing import Any

import numpy as np

from ..progress import Progress, relay
from ..errors import BloodcellInputError
from .classification import (
    ClassifierTrainConfig,
    evaluate_scores,
    headline_metrics,
    train_classifier,
    training_samples,
)


def cross_validate(cfg: ClassifierTrainConfig, folds: int = 5, svm: bool = False
                   ) -> Generator[dict[str, Any], None, dict[str, Any]]:
    from ..datasets.classification import group_split, stratified_group_folds
    from .feature_svm import fit_feature_svm

    if folds < 2:
        raise BloodcellInputError(f"cross-validation needs at least 2 folds; got {folds}")
    if cfg.val_samples is not None or cfg.val is not None:
        raise BloodcellInputError("cross-validation makes its own splits; leave out --val")
    everything, _ = training_samples(dataclasses.replace(cfg, val_fraction=0.0)) \
        if cfg.train_samples is None else (cfg.train_samples, None)
    head = "svm" if svm else ("sigmoid" if cfg.multilabel else "softmax")
    pooled = np.full((len(everything), len(everything.classes)), np.nan)
    per_fold = []
    t0 = time.perf_counter()
    for k, (train_idx, test_idx) in enumerate(stratified_group_folds(everything, folds, cfg.seed)):
        train_part, test_part = everything.subset(train_idx), everything.subset(test_idx)
        yield Progress("message", k + 1, folds, {"n_train": len(train_part), "n_test": len(test_part)},
                       message=f"fold {k + 1}/{folds}: {len(train_part)} training, {len(test_part)} test cells")
        if svm:
            fold_cfg = dataclasses.replace(cfg, out=None, train_samples=train_part, val_samples=test_part)
            result = yield from relay(fit_feature_svm(fold_cfg), f"fold {k + 1}")
            scores = result["val_scores"]
        else:
            inner_train, inner_val = group_split(train_part, 0.15, salt=f"fold{k}")
            fold_cfg = dataclasses.replace(cfg, out=None, train_samples=train_part.subset(inner_train),
                                           val_samples=train_part.subset(inner_val), test_samples=test_part)
            result = yield from relay(train_classifier(fold_cfg), f"fold {k + 1}")
            scores = result["test_scores"]
        pooled[test_idx] = scores
        fold_report = evaluate_scores(test_part, scores, head, n_boot=0)
        per_fold.append({"fold": k + 1, "n_train": len(train_part), "n_test": len(test_part),
                         "seconds": result["seconds"], "best_epoch": result.get("best_epoch"),
                         **headline_metrics(fold_report)})
        yield Progress("val", k + 1, folds, per_fold[-1], stage=f"fold {k + 1}",
                       message=f"fold {k + 1}: " + ", ".join(f"{key} {v:.3f}" for key, v in per_fold[-1].items()
                                                            if isinstance(v, float) and key != "seconds"))
    report = evaluate_scores(everything, pooled, head)
    return {"folds": per_fold, "report": report, "scores": pooled, "targets": everything.targets(),
            "classes": everything.classes, "counts": everything.counts(), "skipped": everything.skipped,
            "head": head, "seconds": time.perf_counter() - t0, "n": len(everything),
            "initial_weights": cfg.weights}
