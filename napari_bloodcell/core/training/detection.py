"""Training a detector: a generator that yields progress, checkpoints the best model and can be resumed.

The recipe follows paper 004 (SGD, momentum 0.9, weight decay 5e-4, multistep decay ×0.1) with torchvision's
detection references' linear warm-up; AdamW with cosine decay is the alternative. AMP runs on CUDA; gradients are
clipped; a non-finite loss stops the run with a message instead of writing a broken model. After every epoch the
model is evaluated on the validation images (VOC mAP@0.5, COCO mAP) and the best epoch is written to ``out``. The
loop, checkpoints, resume and cancel are the shared engine's (:mod:`.engine`).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import BloodcellInputError
from ..io.records import AnnotationSet
from ..progress import Progress
from .engine import Fit, check_resume, fit, last_path, read_last, round_generator


@dataclasses.dataclass
class DetectorTrainConfig:
    arch: str
    data: str | Path
    out: str | Path
    val: str | Path | None = None
    val_fraction: float = 0.2
    epochs: int = 12
    batch: int = 4
    lr: float | None = None
    optimizer: str = "sgd"
    weights: str = "none"
    device: str = "auto"
    arch_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    resume: bool = False
    """Continue the run whose ``out.last.pt`` is there (left by Cancel, a crash or ``keep_last``)."""
    keep_last: bool = False
    """Keep ``out.last.pt`` (weights, optimiser and scheduler state) after the run completes."""
    balance: bool = True
    milestones: tuple[float, float] = (0.67, 0.89)
    warmup_iters: int = 100
    seed: int = 0
    augment: str = "basic"
    """``basic`` (flips, mild colour and scale) or ``lab`` (stain, wide scale, blur, noise: :mod:`..datasets.stain`)."""
    train_sizes: tuple[int, ...] = ()
    """YOLO input sizes drawn per batch (multi-scale training); empty trains at the model's input size."""
    max_iters_per_epoch: int | None = None
    """Cap on iterations per epoch (for quick runs and tests); None uses the whole training set."""
    command: str = ""


DEFAULT_LR = {"sgd": 0.01, "adamw": 1e-4}


def _schedule(cfg: DetectorTrainConfig, total_iters: int):
    warm = max(1, min(cfg.warmup_iters, total_iters // 2))
    steps = [int(f * total_iters) for f in cfg.milestones]

    def factor(it: int) -> float:
        w = min(1.0, 0.001 + (1 - 0.001) * it / warm)
        if cfg.optimizer == "adamw":
            return w * 0.5 * (1 + math.cos(math.pi * min(it, total_iters) / max(total_iters, 1)))
        return w * 0.1 ** sum(it >= s for s in steps)

    return factor


def _load_sets(cfg: DetectorTrainConfig) -> tuple[list[str], list, list]:
    from ..datasets.detection import split_records
    from ..io.formats import read_annotations

    if isinstance(cfg.data, AnnotationSet):  # records gathered by the caller (several sources, a fixed split)
        if not isinstance(cfg.val, AnnotationSet):
            raise BloodcellInputError("records given as training data need validation records too")
        return cfg.data.classes, cfg.data.images, cfg.val.images
    aset = read_annotations(cfg.data)
    if not aset.images or not aset.n_boxes:
        raise BloodcellInputError("training data holds no annotated boxes", cfg.data)
    if cfg.val is not None:
        val_set = read_annotations(cfg.val)
        missing = [c for c in val_set.classes if c not in aset.classes and val_set.class_counts()[c]]
        if missing:
            raise BloodcellInputError(f"validation classes {missing} are not in the training classes {aset.classes}")
        return aset.classes, aset.images, val_set.images
    train, val = split_records(aset, cfg.val_fraction)
    return aset.classes, train, val


def evaluate_model(model, records, classes: list[str], device) -> dict[str, Any]:
    """VOC mAP@0.5 and COCO mAP of ``model`` on ``records`` (score floor 0.01, no tiling)."""
    from ..inference.detect import TorchPredictor, detect_array, detections_record
    from ..io.images import read_image
    from ..metrics import detection_report
    from ..progress import drain

    model.eval()
    predictor = TorchPredictor(model, "training", device, batch_size=1)
    preds = []
    t0 = time.perf_counter()
    for rec in records:
        image = read_image(rec.path)
        dets = drain(detect_array(predictor, image, score=0.01, nms_iou=0.5, tile=0))
        preds.append(detections_record(rec.file_name, rec.width, rec.height, dets, "training"))
    ms = (time.perf_counter() - t0) * 1000 / max(len(records), 1)
    report = detection_report(AnnotationSet(classes, list(records)), AnnotationSet(classes, preds))
    return {"mAP50": report["mAP50"], "mAP": report["mAP"], "ms_per_image": ms,
            "per_class_AP50": {k: v["AP50"] for k, v in report["per_class"].items()}}


def train_detector(cfg: DetectorTrainConfig) -> Generator[Progress, None, dict[str, Any]]:
    """Train through the engine (:mod:`.engine`); returns the best epoch's metrics and paths."""
    from ..datasets.detection import (
        DetectionDataset,
        collate,
        content_hash,
        repeat_factor_weights,
    )
    from ..device import as_device
    from ..models.checkpoints import FORMAT
    from ..models.detectors import build_detector

    from . import distributed

    out = Path(cfg.out)
    last = last_path(out)
    distributed.check_batch(cfg.batch)
    if cfg.optimizer not in DEFAULT_LR:
        raise BloodcellInputError(f"optimizer must be one of {', '.join(DEFAULT_LR)}; got {cfg.optimizer!r}")
    if cfg.epochs < 1 or cfg.batch < 1:
        raise BloodcellInputError(f"epochs and batch must be at least 1; got {cfg.epochs} and {cfg.batch}")
    check_resume(out, cfg.resume)
    torch.manual_seed(cfg.seed)
    device = as_device(cfg.device)
    classes, train_recs, val_recs = _load_sets(cfg)
    data_hash = content_hash(train_recs, classes)
    model = build_detector(cfg.arch, classes, "none" if cfg.resume else cfg.weights, cfg.arch_args)
    resume = read_last(last) if cfg.resume else None  # read once: the engine resumes from the same state
    if resume is not None:
        model.initial_weights = str(resume.get("initial_weights", "unknown"))
    model.to(device)
    if cfg.train_sizes:
        if not hasattr(model.net, "train_sizes") or any(s % 32 or not 128 <= s <= 1024 for s in cfg.train_sizes):
            raise BloodcellInputError("multi-scale sizes need a YOLO architecture and multiples of 32 in 128..1024; "
                                      f"got {cfg.arch} and {list(cfg.train_sizes)}")
        model.net.train_sizes = tuple(int(s) for s in cfg.train_sizes)

    dataset = DetectionDataset(train_recs, augment=cfg.augment)
    weights = repeat_factor_weights(train_recs, len(classes)) if cfg.balance else None

    def batches(round_: int):
        gen = round_generator(cfg.seed, round_)
        sampler = None if weights is None else torch.utils.data.WeightedRandomSampler(
            weights, num_samples=len(train_recs), replacement=True, generator=gen)
        return distributed.data_loader(dataset, cfg.batch, shuffle=sampler is None, sampler=sampler, generator=gen,
                                       collate_fn=collate, drop_last=len(dataset) > cfg.batch)

    n_batches = len(batches(0))
    iters = n_batches if cfg.max_iters_per_epoch is None else min(n_batches, cfg.max_iters_per_epoch)
    lr = cfg.lr if cfg.lr is not None else DEFAULT_LR[cfg.optimizer]
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)
    else:
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg, iters * cfg.epochs))
    sizes = [max(r.width, r.height) for r in train_recs]
    command = cfg.command or " ".join(sys.argv)

    def loss(batch, net=model) -> tuple[torch.Tensor, dict[str, float]]:
        images, targets = batch
        images = [im.to(device) for im in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        losses = net(images, targets)
        return sum(losses.values()), {k: float(v.detach()) for k, v in losses.items()}

    def validate(round_: int) -> Generator[Progress, None, dict[str, Any]]:
        yield Progress("validate", 0, len(val_recs), message=f"scoring {len(val_recs)} validation image(s)")
        return evaluate_model(model, val_recs, classes, device)

    def describe(metrics: dict[str, Any], epoch: int) -> dict[str, Any]:
        return {"format": FORMAT, "version": 1, "arch": cfg.arch, "arch_args": dict(model.arch_args),
                "classes": classes, "initial_weights": model.initial_weights, "data_hash": data_hash,
                "data": str(cfg.data.extra.get("source", "records")) if isinstance(cfg.data, AnnotationSet) else str(cfg.data),
                "augment": cfg.augment, "train_sizes": list(cfg.train_sizes), "val_metrics": metrics, "epoch": epoch,
                "image_size": int(np.median(sizes)), "command": command,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "n_train": len(train_recs), "n_val": len(val_recs)}

    result = yield from fit(Fit(
        model=model, optimizer=optimizer, device=device, rounds=cfg.epochs, iters=lambda r: iters, batches=batches,
        loss=loss, validate=validate, describe=describe, metric="mAP50", out=out, scheduler=scheduler,
        seed=cfg.seed, resume=resume, keep_last=cfg.keep_last, find_unused=True))
    if not distributed.is_main():
        return {"rank": distributed.rank()}
    return {"out": str(out), "last": str(result.last) if result.last else None, "best": result.best,
            "history": result.history, "data_hash": data_hash, "initial_weights": model.initial_weights,
            "device": str(device), "n_train": len(train_recs), "n_val": len(val_recs)}
