"""Naming cells: classifier checkpoints, crops of boxes in batches, probabilities, margins and flags.

The uncertainty the review queue sorts by is the **margin**: for single-label models the top probability minus
the runner-up (0 = a coin toss between two types, 1 = certain); for multi-label models the smallest distance of a
label's probability from the 0.5 threshold, doubled (0 = some label is undecided). An SVM head gives decision
values, not probabilities; its "probabilities" are the softmax of those values (a ranking, not calibrated), and
the checkpoint says so (``head: svm``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..progress import Progress, note, relay, step
from ..crops import CROP_CONTEXT, cell_crops
from ..errors import BloodcellInputError
from ..io.records import AnnotationSet, ImageRecord

FORMAT = "napari-bloodcell/classifier"
HEADS = ("softmax", "sigmoid", "svm")
DEFAULT_CONTEXT = CROP_CONTEXT
"""Context around a box, as a fraction of its longer side on each side (:mod:`..crops`: the export's crops and
training use the same cut)."""


@dataclasses.dataclass
class ClassifierPredictor:
    model: Any
    classes: list[str]
    head: str
    device: torch.device
    context: float = DEFAULT_CONTEXT
    svm: Any = None
    feature_layer: str | None = None
    screen: Any = None
    batch_size: int = 16
    model_id: str = "classifier"
    target_class: str | None = None
    """The box class it was trained to type (e.g. WBC), when its training said so."""

    @property
    def multilabel(self) -> bool:
        return self.head == "sigmoid"


@dataclasses.dataclass
class ClassResult:
    classes: list[str]
    multilabel: bool
    scores: np.ndarray
    """Raw outputs: logits, or SVM decision values."""
    probabilities: np.ndarray
    labels: np.ndarray
    """Top class index per cell (multi-label: the most probable label, for display)."""
    margin: np.ndarray
    flags: list[list[str]]
    abnormal: np.ndarray | None
    ms_per_cell: float

    def attributes(self, i: int) -> dict[str, Any]:
        """What a box records of its classification (COCO attributes, Shapes features, the review sidecar)."""
        out: dict[str, Any] = {"margin": round(float(self.margin[i]), 5),
                               "class_probabilities": {c: round(float(p), 5)
                                                       for c, p in zip(self.classes, self.probabilities[i])}}
        if self.multilabel:
            out["labels"] = list(self.flags[i])
        if self.abnormal is not None:
            out["abnormal"] = round(float(self.abnormal[i]), 5)
        return out


def margins(probabilities: np.ndarray, multilabel: bool) -> np.ndarray:
    p = np.asarray(probabilities, dtype=np.float64)
    if len(p) == 0:
        return np.zeros(0)
    if multilabel:
        return np.abs(2 * p - 1).min(1)
    if p.shape[1] < 2:
        return np.ones(len(p))
    top = np.sort(p, 1)
    return top[:, -1] - top[:, -2]


def checkpoint_model(ckpt: dict[str, Any]):
    from ..models.classifiers import build_classifier

    args = dict(ckpt["arch_args"])
    model = build_classifier(ckpt["arch"], list(ckpt["classes"]), "none", multilabel=bool(args.get("multilabel")),
                             input_size=int(args.get("input_size", 0)) or None)
    model.load_state_dict(ckpt["model"])
    model.initial_weights = ckpt.get("initial_weights", "unknown")
    return model


def load_classifier(path: str | Path, device: str | None = "auto", batch_size: int = 16) -> ClassifierPredictor:
    """A predictor from a classifier checkpoint (``torch.load(..., weights_only=True)``)."""
    from ..models.checkpoints import file_digest, load_checkpoint
    from ..device import as_device
    from ..models.shallow import BoostedScreen, LinearOvR

    ckpt = load_checkpoint(path, expect=FORMAT)
    head = ckpt.get("head", "softmax")
    if head not in HEADS:
        raise BloodcellInputError(f"unknown classifier head {head!r} (allowed {', '.join(HEADS)})", path)
    try:
        model = checkpoint_model(ckpt)
    except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as exc:
        if isinstance(exc, BloodcellInputError):
            raise BloodcellInputError(exc.problem, path) from None
        raise BloodcellInputError(f"its architecture or weights do not fit ({type(exc).__name__}: "
                                  f"{' '.join(str(exc).split())[:200]})", path) from None
    dev = as_device(device)
    return ClassifierPredictor(
        model.to(dev).eval(), list(ckpt["classes"]), head, dev, float(ckpt.get("context", DEFAULT_CONTEXT)),
        LinearOvR.from_state(ckpt["svm"]) if head == "svm" else None, ckpt.get("feature_layer"),
        BoostedScreen.from_state(ckpt["screen"]) if ckpt.get("screen") else None, batch_size,
        f"{ckpt['arch']}:{Path(path).stem}@{file_digest(path, 8)}", ckpt.get("target_class") or None,
    )


def predict_batch(pred: ClassifierPredictor, batch: torch.Tensor) -> np.ndarray:
    """Raw scores of a batch of 0..1 tensors already at the model's input size."""
    from ..models.classifiers import extract_features

    batch = batch.to(pred.device)
    with torch.no_grad(), torch.autocast("cuda", enabled=pred.device.type == "cuda"):
        if pred.head == "svm":
            return pred.svm.decision(extract_features(pred.model, batch, pred.feature_layer).float().cpu().numpy())
        return pred.model(batch).float().cpu().numpy()


def to_probabilities(scores: np.ndarray, head: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if head == "sigmoid":
        return 1.0 / (1.0 + np.exp(-s))
    e = np.exp(s - s.max(1, keepdims=True)) if len(s) else s
    return e / e.sum(1, keepdims=True) if len(s) else s


def classify_crops(pred: ClassifierPredictor, crops: list[np.ndarray]) -> Generator[tuple[int, int], None,
                                                                                    ClassResult]:
    """Classify uint8 RGB crops in batches; yields ``(done, total)``; returns a :class:`ClassResult`."""
    from ..datasets.classification import eval_transforms, to_tensor

    resize = eval_transforms(pred.model.input_size)
    scores = []
    t0 = time.perf_counter()
    pred.model.eval()
    for start in range(0, len(crops), pred.batch_size):
        chunk = crops[start:start + pred.batch_size]
        batch = torch.stack([resize(to_tensor(c)) for c in chunk])
        scores.append(predict_batch(pred, batch))
        yield step(min(start + len(chunk), len(crops)), len(crops))
    raw = np.concatenate(scores) if scores else np.zeros((0, len(pred.classes)))
    probs = to_probabilities(raw, pred.head)
    flags = [[c for c, p in zip(pred.classes, row) if p >= 0.5] for row in probs] if pred.multilabel else \
        [[] for _ in probs]
    abnormal = pred.screen.probability(probs) if pred.screen is not None and len(probs) else None
    ms = (time.perf_counter() - t0) * 1000 / max(len(crops), 1)
    return ClassResult(list(pred.classes), pred.multilabel, raw, probs,
                       probs.argmax(1) if len(probs) else np.zeros(0, np.int64), margins(probs, pred.multilabel),
                       flags, abnormal, ms)


def predict_samples(pred: ClassifierPredictor, sset: Any) -> Generator[dict[str, Any], None, np.ndarray]:
    """Raw scores for every sample of a :class:`~..datasets.classification.SampleSet`, cut as the model's
    checkpoint says (input size, context); yields ``{"phase": "predict", "done", "total"}``."""
    from ..datasets.classification import CropDataset

    data = CropDataset(sset, pred.model.input_size, pred.context)
    out = []
    for start in range(0, len(data), pred.batch_size):
        idx = range(start, min(start + pred.batch_size, len(data)))
        out.append(predict_batch(pred, torch.stack([data[i][0] for i in idx])))
        yield Progress("predict", idx[-1] + 1, len(data))
    return np.concatenate(out) if out else np.zeros((0, len(pred.classes)))


def classify_boxes(pred: ClassifierPredictor, image: np.ndarray, boxes: np.ndarray
                   ) -> Generator[tuple[int, int], None, ClassResult]:
    """Classify the cells inside ``boxes`` (xyxy pixels) of one image."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    crops = cell_crops(image, boxes, pred.context)
    return (yield from classify_crops(pred, crops))


def merged_classes(detector_classes: list[str], classifier_classes: list[str], target: str | None) -> list[str]:
    """The review's class list after typing ``target`` boxes: the other detector classes, the types, and the
    target class itself last (a white cell of unknown type)."""
    keep = [c for c in detector_classes if c != target and c not in classifier_classes]
    tail = [target] if target and target in detector_classes and target not in classifier_classes else []
    return keep + list(classifier_classes) + tail


def classify_record(pred: ClassifierPredictor, image: np.ndarray, rec: ImageRecord, classes: list[str],
                    target: str | None, out_classes: list[str]) -> Generator[tuple[int, int], None, ImageRecord]:
    """``rec`` with its ``target`` boxes (all boxes when None) typed, relabelled into ``out_classes``."""
    mapping = np.array([out_classes.index(c) for c in classes], dtype=np.int64)
    labels = mapping[rec.labels] if len(rec) else rec.labels.copy()
    chosen = np.array([target is None or classes[int(lab)] == target for lab in rec.labels], dtype=bool)
    attrs = rec.attribute_list()
    if chosen.any():
        result = yield from classify_boxes(pred, image, rec.boxes[chosen])
        for j, i in enumerate(np.flatnonzero(chosen)):
            attrs[i].update(result.attributes(j))
            attrs[i]["classified_by"] = pred.model_id
            if not pred.multilabel:
                labels[i] = out_classes.index(pred.classes[int(result.labels[j])])
    return dataclasses.replace(rec, labels=labels, attributes=attrs)


def record_image(rec: ImageRecord) -> Path:
    """The image file a boxes record names; it must exist."""
    if rec.path is None or not Path(rec.path).is_file():
        raise BloodcellInputError(f"image of {rec.file_name} not found; the boxes file must name images that "
                                  "exist (absolute paths, or relative to it)")
    return Path(rec.path)


def whole_image_record(path: Path, width: int, height: int) -> ImageRecord:
    """One box over the whole image (the papers' whole-field setting), class 0 of ``["image"]``."""
    return ImageRecord(path.name, width, height, np.array([[0, 0, width, height]], float), np.array([0]), path=path)


def classify_annotations(pred: ClassifierPredictor, aset: AnnotationSet, target: str | None = None
                         ) -> Generator[tuple[int, int], None, AnnotationSet]:
    """Type the ``target`` boxes of every image (COCO in, COCO out); yields ``(images done, images)``."""
    from ..io.images import read_image
    from ..progress import drain

    if target is not None and target not in aset.classes:
        raise BloodcellInputError(f"class {target!r} is not in the boxes' classes {aset.classes}; use --target "
                                  "with one of them, or leave it out to classify every box")
    out_classes = aset.classes if pred.multilabel else merged_classes(aset.classes, pred.classes, target)
    records = []
    t0, n_cells = time.perf_counter(), 0
    for k, rec in enumerate(aset.images):
        records.append(drain(classify_record(pred, read_image(record_image(rec)), rec, aset.classes, target,
                                             out_classes)))
        n_cells += int(sum(target is None or aset.classes[int(x)] == target for x in rec.labels))
        yield step(k + 1, len(aset.images))
    info = {"classifier": pred.model_id, "target_class": target, "cells": n_cells,
            "ms_per_cell": (time.perf_counter() - t0) * 1000 / max(n_cells, 1) if n_cells else math.nan}
    extra = dict(aset.extra)
    extra["info"] = {**(aset.extra.get("info") or {}), **info}
    return AnnotationSet(out_classes, records, aset.format, aset.root, list(aset.warnings), extra)



def default_target(pred: ClassifierPredictor, classes: list[str]) -> str | None:
    """Which detector class to type: the one the classifier was trained on, else WBC, else every box."""
    for name in (pred.target_class, "WBC"):
        if name and name in classes and name not in pred.classes:
            return name
    return None


def classify_job(model: str | Path, image: np.ndarray, boxes: np.ndarray, device: str | None = "auto"
                 ) -> Generator[Any, None, tuple[ClassifierPredictor, ClassResult]]:
    """The Classify widget's job: load (in the worker), then classify ``boxes`` with per-batch progress."""
    from ..models.recent import remember

    yield note(f"loading {model}", "load")
    pred = load_classifier(model, device)
    remember(model, "classifier")
    result = yield from classify_boxes(pred, image, boxes)
    return pred, result


def detect_classify_job(detector: str | Path, classifier: str | Path, image: np.ndarray, score: float = 0.3,
                        nms_iou: float = 0.5, device: str | None = "auto", tile: int | None = None,
                        target: str | None = None) -> Generator[Any, None, tuple[list[str], str, ImageRecord]]:
    """Detect, then type the detected cells, as one job; returns the merged classes, the detector's id and the
    field's record (boxes unreviewed, each typed box carrying its probabilities and margin)."""
    from .detect import detect_job, detections_record

    classes, model_id, dets = yield from relay(detect_job(detector, image, score, nms_iou, device, tile), "detect")
    yield Progress("load", message=f"loading {classifier}", stage="classify")
    pred = load_classifier(classifier, device)
    h, w = image.shape[:2]
    rec = detections_record("field", w, h, dets, model_id)
    target = target or default_target(pred, classes)
    out_classes = merged_classes(classes, pred.classes, target) if not pred.multilabel else list(classes)
    rec = yield from relay(classify_record(pred, image, rec, classes, target, out_classes), "classify")
    return out_classes, model_id, rec
