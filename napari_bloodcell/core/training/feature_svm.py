"""Frozen features + linear SVM (paper 003) and the abnormal-cell screen (paper 001).

The SVM path never trains the network: it runs the crops through it once (initial weights ``imagenet``, a file
such as a fine-tuned classifier checkpoint for paper 003's "fine-tuning + SVM", or ``none`` for random features),
takes the flattened output of one layer (VGG16's second 4096-unit dense layer ``fc7`` by default, as the paper),
standardises it and fits a one-vs-rest linear SVM with balanced class weights. The checkpoint keeps the network,
the layer name and the SVM's numbers (see :mod:`..models.shallow`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..progress import Progress
from ..errors import BloodcellInputError
from .classification import (
    ClassifierTrainConfig,
    classifier_checkpoint,
    headline_metrics,
    training_samples,
)


def default_layer(arch: str) -> str:
    return "fc7" if arch == "vgg16" else "pool"


def extract_dataset_features(model, dataset, layer: str, device, batch: int = 32
                             ) -> Generator[dict[str, Any], None, np.ndarray]:
    from ..models.classifiers import extract_features

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=0)
    feats, done = [], 0
    for images, _ in loader:
        with torch.autocast("cuda", enabled=device.type == "cuda"):
            feats.append(extract_features(model, images.to(device), layer).float().cpu().numpy())
        done += len(images)
        yield Progress("predict", done, len(dataset), message=f"features {done}/{len(dataset)}")
    return np.concatenate(feats)


def fit_feature_svm(cfg: ClassifierTrainConfig) -> Generator[dict[str, Any], None, dict[str, Any]]:
    """Extract features of the training and validation crops, fit the SVM, score it on validation."""
    from ..datasets.classification import CropDataset
    from ..models.checkpoints import save_checkpoint
    from ..models.classifiers import build_classifier
    from ..device import as_device
    from ..models.shallow import LinearOvR
    from .classification import evaluate_scores

    if cfg.multilabel:
        raise BloodcellInputError("the SVM path is single-label (one-vs-rest over classes); for multi-label "
                                  "morphology train a sigmoid head (mode last on frozen features is paper 001's set-up)")
    out = cfg.out
    if out is not None and Path(out).exists():
        raise BloodcellInputError("checkpoint already exists; refusing to overwrite it (choose another --out)", out)
    torch.manual_seed(cfg.seed)
    device = as_device(cfg.device)
    train_set, val_set = training_samples(cfg)
    if val_set is None or not len(val_set):
        raise BloodcellInputError("the SVM needs validation cells to be scored on")
    layer = cfg.feature_layer or default_layer(cfg.arch)
    model = build_classifier(cfg.arch, train_set.classes, cfg.weights, False, cfg.input_size).to(device).eval()
    t0 = time.perf_counter()
    size = model.input_size
    train_x = yield from extract_dataset_features(model, CropDataset(train_set, size, cfg.context), layer, device)
    val_x = yield from extract_dataset_features(model, CropDataset(val_set, size, cfg.context), layer, device)
    yield Progress("message", message=f"fitting a linear SVM on {train_x.shape[0]} x {train_x.shape[1]} features")
    try:
        svm = LinearOvR.fit(train_x, train_set.targets(), len(train_set.classes), c=cfg.svm_c, seed=cfg.seed)
    except ValueError as exc:
        raise BloodcellInputError(f"cannot fit the SVM: {exc}") from None
    scores = svm.decision(val_x)
    report = evaluate_scores(val_set, scores, "svm")
    result = {"out": str(out) if out else None, "report": report, "val_scores": scores, "layer": layer,
              "feature_size": int(train_x.shape[1]), "initial_weights": model.initial_weights,
              "device": str(device), "n_train": len(train_set), "n_val": len(val_set),
              "val_targets": val_set.targets(),
              "classes": train_set.classes, "seconds": time.perf_counter() - t0}
    if out is not None:
        ckpt = classifier_checkpoint(model, "svm", cfg.context, svm=svm.to_state(), feature_layer=layer,
                                     mode="features+svm", val_metrics=headline_metrics(report), n_train=len(train_set),
                                     n_val=len(val_set), data=str(cfg.data), command=cfg.command or " ".join(sys.argv),
                                     target_class=cfg.box_class or "")
        save_checkpoint(ckpt, out)
    return result


def abnormal_targets(sset, normal: list[str]) -> np.ndarray:
    """A cell patch is abnormal when it carries any label outside ``normal`` (paper 001: five abnormal types)."""
    unknown = [n for n in normal if n not in sset.classes]
    if unknown:
        raise BloodcellInputError(f"normal labels {unknown} are not among the labels {sset.classes}")
    abnormal_cols = [i for i, c in enumerate(sset.classes) if c not in normal]
    return sset.targets()[:, abnormal_cols].max(1) > 0.5 if abnormal_cols else np.zeros(len(sset), bool)


def fit_screen_from_scores(train_set, train_scores: np.ndarray, val_set, val_scores: np.ndarray,
                           normal: list[str], seed: int = 0):
    """Gradient boosting on the training cells' label probabilities; its report on the validation cells."""
    from ..classification_metrics import screen_report
    from ..inference.classify import to_probabilities
    from ..models.shallow import BoostedScreen

    y = abnormal_targets(train_set, normal)
    try:
        screen = BoostedScreen.fit(to_probabilities(train_scores, "sigmoid"), y, seed=seed)
    except ValueError as exc:
        raise BloodcellInputError(f"cannot fit the abnormal-cell screen: {exc}") from None
    report = screen_report(abnormal_targets(val_set, normal),
                           screen.probability(to_probabilities(val_scores, "sigmoid")))
    return screen, report
