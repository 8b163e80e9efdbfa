"""One-click retraining of the cell classifier, with the same registry, versions and rollback as the detector.

The cells are the reviewed boxes of a dataset version whose class is one the classifier names (for a WBC-type
classifier: the neutrophils, eosinophils, ... that people confirmed or corrected). Validation cells are those of
the same fixed image split the detector uses (:func:`.retrain.split_fixed`), so a version is always compared with
its parent on cells neither trained on. The comparison metric is the macro F1 (each class counts the same, so
the rare monocytes are not drowned by neutrophils), or exact-match accuracy for multi-label models. An active
SVM classifier is refitted on the new cells with its own network; a network classifier is fine-tuned from its
weights.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from ..errors import BloodcellInputError
from .retrain import RetrainConfig, RetrainResult, register_version, split_fixed

DEFAULT_CLASSIFIER = "resnet50"


def _score(metrics: dict[str, Any]) -> float:
    return float(metrics.get("macro_f1", metrics.get("exact_match", float("nan"))))


def retrain_classifier(cfg: RetrainConfig) -> Generator[dict[str, Any], None, RetrainResult]:
    """Yields the training progress of :func:`.classification.train_classifier` (or the SVM's), then
    ``{"phase": "compare", ...}``; registers the new version and activates it when better (or as asked)."""
    from ..datasets.classification import SampleSet, samples_from_annotations
    from ..inference.classify import load_classifier, predict_samples
    from ..io.coco import read_coco
    from ..io.dataset import dataset_coco_path, version_entry
    from ..models.checkpoints import load_checkpoint
    from ..models.classifiers import ARCHITECTURES
    from ..models.registry import ModelRegistry
    from .classification import (
        ClassifierTrainConfig,
        evaluate_scores,
        headline_metrics,
        train_classifier,
    )
    from .feature_svm import fit_feature_svm

    registry = ModelRegistry(cfg.registry)
    dataset = Path(cfg.dataset).resolve()
    entry = version_entry(dataset, cfg.dataset_version)
    aset = read_coco(dataset_coco_path(dataset, entry["version"]))
    parent = registry.active("classifier")
    parent_ckpt = load_checkpoint(registry.path(parent), expect="napari-bloodcell/classifier") if parent else None
    multilabel = bool(parent_ckpt and parent_ckpt["arch_args"].get("multilabel"))
    classes = list(parent_ckpt["classes"]) if parent_ckpt else cfg.classes
    everything: SampleSet = samples_from_annotations(aset, classes, multilabel=multilabel)
    if not parent_ckpt and not cfg.classes:
        everything = everything.without(min_count=cfg.min_count)
    if len(everything) < 2:
        raise BloodcellInputError(f"the dataset has {len(everything)} reviewed cell(s) of the classes "
                                  f"{everything.classes}; a classifier needs more")
    labelled = [r for r in aset.images if len(r)]
    _, val_recs = split_fixed(labelled, cfg.val_fraction)
    val_stems = {r.stem for r in val_recs}
    groups = everything.groups()
    train = everything.subset([i for i, g in enumerate(groups) if g not in val_stems])
    val = everything.subset([i for i, g in enumerate(groups) if g in val_stems])
    if not len(val) or not len(train):
        raise BloodcellInputError(f"the fixed split leaves {len(train)} training and {len(val)} validation cells; "
                                  "export more reviewed images")
    arch = parent_ckpt["arch"] if parent_ckpt else (cfg.arch if cfg.arch in ARCHITECTURES else DEFAULT_CLASSIFIER)
    head = parent_ckpt.get("head", "softmax") if parent_ckpt else "softmax"
    work = registry.folder / ".work" / time.strftime("classifier-%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=False)
    train_cfg = ClassifierTrainConfig(
        arch=arch, out=work / "model.pt", multilabel=multilabel, epochs=cfg.epochs, batch=cfg.batch or 16,
        optimizer="adam", lr=cfg.lr, weights=str(registry.path(parent)) if parent else cfg.weights,
        device=cfg.device, max_iters_per_epoch=cfg.max_iters_per_epoch, train_samples=train, val_samples=val,
        input_size=int(parent_ckpt["arch_args"]["input_size"]) if parent_ckpt else None,
        context=float(parent_ckpt.get("context", 0.15)) if parent_ckpt else 0.15,
        feature_layer=parent_ckpt.get("feature_layer") if parent_ckpt else None,
        screen_normal=parent_ckpt.get("screen_normal") or None if parent_ckpt else None,
        data=f"{dataset} v{entry['version']}", command=cfg.command or " ".join(sys.argv),
    )
    try:
        result = yield from (fit_feature_svm(train_cfg) if head == "svm" else train_classifier(train_cfg))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    metrics = headline_metrics(result["report"])
    parent_metrics = None
    if parent is not None:
        yield {"phase": "compare", "message": f"scoring the active classifier {parent['id']} on the same cells"}
        pred = load_classifier(registry.path(parent), cfg.device)
        scores = yield from predict_samples(pred, val)
        parent_metrics = headline_metrics(evaluate_scores(val, scores, pred.head, n_boot=0))
    better = parent_metrics is None or _score(metrics) > _score(parent_metrics)
    name = "exact match" if multilabel else "macro F1"
    if parent is None:
        reason = "first classifier"
    else:
        reason = (f"{name} {_score(metrics):.3f} vs {_score(parent_metrics):.3f} of {parent['id']} on {len(val)} "
                  f"validation cell(s)")
    return register_version(
        cfg, registry, work, "classifier", parent, entry, metrics, parent_metrics, better, reason, train_cfg.command,
        {"arch": arch, "classes": list(everything.classes), "head": head, "val_images": sorted(val_stems),
         "initial_weights": result["initial_weights"], "device": result["device"], "n_train": len(train),
         "n_val": len(val)})
