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

import dataclasses
from collections.abc import Generator
from typing import Any

from ..crops import CROP_CONTEXT
from ..errors import BloodcellInputError
from ..progress import Progress
from .retrain import RetrainConfig, RetrainContext, RetrainPlan, RetrainResult, retrain, split_fixed

DEFAULT_CLASSIFIER = "resnet50"


def retrain_classifier(cfg: RetrainConfig) -> Generator[Progress, None, RetrainResult]:
    """The shared skeleton (:func:`.retrain.retrain`) with the classifier's plan."""
    return retrain(dataclasses.replace(cfg, task="classifier"))


def plan_classifier(ctx: RetrainContext) -> RetrainPlan:
    """Fine-tune (or refit, for an SVM head) the active classifier on the reviewed cells of the dataset."""
    from ..datasets.classification import SampleSet, samples_from_annotations
    from ..inference.classify import load_classifier, predict_samples
    from ..io.coco import read_coco
    from ..io.dataset import dataset_coco_path
    from ..models.checkpoints import load_checkpoint
    from ..models.classifiers import ARCHITECTURES
    from ..tasks import TASKS
    from .classification import (
        ClassifierTrainConfig,
        evaluate_scores,
        headline_metrics,
        train_classifier,
    )
    from .feature_svm import fit_feature_svm

    cfg, parent = ctx.cfg, ctx.parent
    aset = read_coco(dataset_coco_path(ctx.dataset, ctx.entry["version"]))
    parent_ckpt = load_checkpoint(ctx.parent_path, expect=TASKS["classifier"].format) if parent else None
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
    train_cfg = ClassifierTrainConfig(
        arch=arch, out=ctx.work / "model.pt", multilabel=multilabel, epochs=cfg.epochs, batch=cfg.batch or 16,
        optimizer="adam", lr=cfg.lr, weights=str(ctx.parent_path) if parent else cfg.weights,
        device=cfg.device, max_iters_per_epoch=cfg.max_iters_per_epoch, train_samples=train, val_samples=val,
        input_size=int(parent_ckpt["arch_args"]["input_size"]) if parent_ckpt else None,
        context=float(parent_ckpt.get("context", CROP_CONTEXT)) if parent_ckpt else CROP_CONTEXT,
        feature_layer=parent_ckpt.get("feature_layer") if parent_ckpt else None,
        screen_normal=parent_ckpt.get("screen_normal") or None if parent_ckpt else None,
        data=f"{ctx.dataset} v{ctx.entry['version']}", command=ctx.command,
    )

    def score_parent() -> Generator[Progress, None, dict[str, Any] | None]:
        pred = load_classifier(ctx.parent_path, cfg.device)
        scores = yield from predict_samples(pred, val)
        return headline_metrics(evaluate_scores(val, scores, pred.head, n_boot=0))

    return RetrainPlan(
        train=lambda: fit_feature_svm(train_cfg) if head == "svm" else train_classifier(train_cfg),
        metrics_of=lambda r: headline_metrics(r["report"]), score_parent=score_parent,
        extra_of=lambda r: {"arch": arch, "classes": list(everything.classes), "head": head,
                            "val_images": sorted(val_stems), "initial_weights": r["initial_weights"],
                            "device": r["device"], "n_train": len(train), "n_val": len(val)},
        n_val=len(val))
