"""Training a detector: a generator that yields progress, checkpoints the best model and can be resumed.

The recipe follows paper 004 (SGD, momentum 0.9, weight decay 5e-4, multistep decay ×0.1) with torchvision's
detection references' linear warm-up; AdamW with cosine decay is the alternative. AMP runs on CUDA; gradients are
clipped; a non-finite loss stops the run with a message instead of writing a broken model. After every epoch the
model is evaluated on the validation images (VOC mAP@0.5, COCO mAP) and the best epoch is written to ``out``;
``out.last.pt`` always holds the latest state to resume from, also after Cancel (closing the generator).
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
from .steps import optimizer_step


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
    resume: str | Path | None = None
    balance: bool = True
    milestones: tuple[float, float] = (0.67, 0.89)
    warmup_iters: int = 100
    seed: int = 0
    max_iters_per_epoch: int | None = None
    """Cap on iterations per epoch (for quick runs and tests); None uses the whole training set."""
    command: str = ""


DEFAULT_LR = {"sgd": 0.01, "adamw": 1e-4}


def last_path(out: Path) -> Path:
    return out.with_name(out.name + ".last.pt") if out.suffix != ".pt" else out.with_suffix(".last.pt")


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


def train_detector(cfg: DetectorTrainConfig) -> Generator[dict[str, Any], None, dict[str, Any]]:
    """Train; yields ``{"phase": "train"|"val", ...}`` dicts; returns the best epoch's metrics and paths."""
    from ..datasets.detection import (
        DetectionDataset,
        collate,
        content_hash,
        repeat_factor_weights,
    )
    from ..models.checkpoints import FORMAT, load_checkpoint, save_checkpoint
    from ..device import as_device
    from ..models.detectors import build_detector

    out = Path(cfg.out)
    last = last_path(out)
    if cfg.optimizer not in DEFAULT_LR:
        raise BloodcellInputError(f"optimizer must be one of {', '.join(DEFAULT_LR)}; got {cfg.optimizer!r}")
    if cfg.epochs < 1 or cfg.batch < 1:
        raise BloodcellInputError(f"epochs and batch must be at least 1; got {cfg.epochs} and {cfg.batch}")
    resume = load_checkpoint(cfg.resume) if cfg.resume else None
    if out.exists() and resume is None:
        raise BloodcellInputError("checkpoint already exists; refusing to overwrite it (choose another --out)", out)
    torch.manual_seed(cfg.seed)
    device = as_device(cfg.device)
    classes, train_recs, val_recs = _load_sets(cfg)
    data_hash = content_hash(train_recs, classes)
    if resume is not None:
        if resume["arch"] != cfg.arch or list(resume["classes"]) != classes:
            raise BloodcellInputError(
                f"cannot resume: the checkpoint is {resume['arch']} for {resume['classes']}, "
                f"this run is {cfg.arch} for {classes}", cfg.resume
            )
        model = build_detector(cfg.arch, classes, "none", dict(resume["arch_args"]))
        model.load_state_dict(resume["model"])
        model.initial_weights = resume.get("initial_weights", "unknown")
    else:
        model = build_detector(cfg.arch, classes, cfg.weights, cfg.arch_args)
    model.to(device)

    dataset = DetectionDataset(train_recs, augment=True)
    sampler = None
    if cfg.balance:
        weights = repeat_factor_weights(train_recs, len(classes))
        sampler = torch.utils.data.WeightedRandomSampler(weights, num_samples=len(train_recs), replacement=True,
                                                         generator=torch.Generator().manual_seed(cfg.seed))
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch, shuffle=sampler is None, sampler=sampler,
                                         collate_fn=collate, num_workers=0, drop_last=len(dataset) > cfg.batch)
    iters = len(loader) if cfg.max_iters_per_epoch is None else min(len(loader), cfg.max_iters_per_epoch)
    total = iters * cfg.epochs
    lr = cfg.lr if cfg.lr is not None else DEFAULT_LR[cfg.optimizer]
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)
    else:
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg, total))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    start_epoch, best, history = 0, -1.0, []
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        start_epoch, best = int(resume["epoch"]) + 1, float(resume.get("best_mAP50", -1.0))
        history = list(resume.get("history", []))
    sizes = [max(r.width, r.height) for r in train_recs]

    def checkpoint(epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": 1, "arch": cfg.arch, "arch_args": dict(model.arch_args),
            "classes": classes, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "initial_weights": model.initial_weights, "data_hash": data_hash, "data": str(cfg.data),
            "val_metrics": metrics, "epoch": epoch, "best_mAP50": best, "history": history,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "image_size": int(np.median(sizes)), "command": cfg.command or " ".join(sys.argv),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "n_train": len(train_recs), "n_val": len(val_recs),
        }

    epoch, metrics = start_epoch, {}
    t_start = time.perf_counter()
    done_iters = 0
    try:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            running = []
            for i, (images, targets) in enumerate(loader):
                if i >= iters:
                    break
                images = [im.to(device) for im in images]
                targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
                with torch.autocast("cuda", enabled=device.type == "cuda"):
                    losses = model(images, targets)
                loss = sum(losses.values())
                if not torch.isfinite(loss):
                    raise BloodcellInputError(
                        f"training diverged: the loss became {float(loss.detach())} at epoch {epoch + 1}, "
                        f"iteration {i + 1} ({ {k: round(float(v.detach()), 3) for k, v in losses.items()} }); "
                        "lower the learning rate "
                        f"(now {lr}) or check the boxes; the last good state is in {last}"
                    )
                optimizer_step(loss, optimizer, scaler, params)
                scheduler.step()
                running.append(float(loss.detach()))
                done_iters += 1
                elapsed = time.perf_counter() - t_start
                remaining = total - (epoch * iters + i + 1)
                yield {"phase": "train", "epoch": epoch + 1, "epochs": cfg.epochs, "iter": i + 1, "iters": iters,
                       "loss": float(loss.detach()), "losses": {k: float(v.detach()) for k, v in losses.items()},
                       "lr": optimizer.param_groups[0]["lr"], "eta_s": elapsed / done_iters * remaining}
            metrics = evaluate_model(model, val_recs, classes, device)
            metrics["train_loss"] = float(np.mean(running)) if running else float("nan")
            metrics["epoch"] = epoch + 1
            history.append(metrics)
            improved = metrics["mAP50"] > best
            if improved:
                best = metrics["mAP50"]
            state = checkpoint(epoch, metrics)  # one copy of the weights serves both files
            if improved:
                save_checkpoint(state, out, exist="replace")
            save_checkpoint(state, last, exist="replace")
            yield {"phase": "val", "epoch": epoch + 1, "epochs": cfg.epochs, "best": improved, **metrics}
    except GeneratorExit:
        if epoch > start_epoch or history:
            save_checkpoint(checkpoint(max(epoch - 1, 0), metrics), last, exist="replace")
        raise
    best_metrics = max(history, key=lambda m: m["mAP50"]) if history else {}
    return {"out": str(out), "last": str(last), "best": best_metrics, "history": history,
            "data_hash": data_hash, "initial_weights": model.initial_weights, "device": str(device),
            "n_train": len(train_recs), "n_val": len(val_recs)}
