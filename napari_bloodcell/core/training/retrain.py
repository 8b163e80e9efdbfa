"""One-click retraining: fine-tune the active detector on a dataset version and register the result.

The run trains in a scratch folder inside the registry (``.work/``), so nothing the registry names is touched
until the end. Both the new model and the active one are then scored on the same fixed validation split of the
dataset (an image is in it when the hash of its content-named file falls below the fraction, so it never moves
between versions; with very few images the one with the lowest hash is used). The new version is always kept;
it becomes active only when it beats the active model there, or when the caller says so. A cancelled, killed or
failed run registers nothing and leaves the active model as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any, Literal

from ..errors import BloodcellInputError
from ..io.records import AnnotationSet, ImageRecord

ActivatePolicy = Literal["if-better", "always", "never"]
DEFAULT_ARCH = "yolov3"


@dataclasses.dataclass
class RetrainConfig:
    dataset: str | Path
    registry: str | Path | None = None
    dataset_version: int | None = None
    arch: str = DEFAULT_ARCH
    """Used only when no detector is active yet (the first model is trained from ``weights``)."""
    weights: str = "none"
    arch_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    epochs: int = 5
    batch: int | None = None
    """Default 2 for detectors (whole fields), 16 for classifiers (crops)."""
    lr: float | None = 1e-4
    optimizer: str = "adamw"
    device: str = "auto"
    val_fraction: float = 0.2
    max_iters_per_epoch: int | None = None
    activate: ActivatePolicy = "if-better"
    by: str = ""
    command: str = ""
    task: str = "detector"
    """``detector``, ``classifier`` (:mod:`.retrain_classifier`) or ``segmenter`` (:mod:`.retrain_segmenter`)."""
    classes: list[str] | None = None
    """Classifier only: the classes to learn when no classifier is active yet (default: every class with at
    least ``min_count`` reviewed cells)."""
    min_count: int = 5
    patch: int | None = None
    """Segmenter only: the training window of a first segmenter (later ones keep their parent's)."""
    freeze: list[str] = dataclasses.field(default_factory=list)
    """Segmenter only: stages to freeze while fine-tuning (conv_0, res_1, res_2, res_3)."""


@dataclasses.dataclass
class RetrainResult:
    version: dict[str, Any]
    activated: bool
    metrics: dict[str, Any]
    parent: str | None
    parent_metrics: dict[str, Any] | None
    reason: str


def split_fixed(records: list[ImageRecord], fraction: float) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """The validation images: hash of the file stem below ``fraction``; at least one, never all."""
    if len(records) < 2:
        raise BloodcellInputError(f"retraining needs at least 2 images (one to validate on); the dataset has "
                                  f"{len(records)}")
    rank = {id(r): int(hashlib.sha1(f"bloodcell:{Path(r.file_name).stem}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
            for r in records}
    val = [r for r in records if rank[id(r)] < fraction]
    if not val:
        val = [min(records, key=lambda r: rank[id(r)])]
    if len(val) == len(records):
        val = val[:-1]
    train = [r for r in records if all(r is not v for v in val)]
    return train, val


def retrain_detector(cfg: RetrainConfig) -> Generator[dict[str, Any], None, RetrainResult]:
    """Yields the training progress dicts of :func:`train_detector`, then ``{"phase": "compare", ...}``."""
    from ..io.coco import read_coco, write_coco
    from ..io.dataset import dataset_coco_path, version_entry
    from ..models.checkpoints import detector_from_checkpoint, load_checkpoint
    from ..device import as_device
    from ..models.registry import ModelRegistry
    from .detection import DetectorTrainConfig, evaluate_model, train_detector

    if cfg.activate not in ("if-better", "always", "never"):
        raise BloodcellInputError(f"activate must be if-better, always or never; got {cfg.activate!r}")
    registry = ModelRegistry(cfg.registry)
    dataset = Path(cfg.dataset).resolve()
    entry = version_entry(dataset, cfg.dataset_version)
    aset = read_coco(dataset_coco_path(dataset, entry["version"]))
    labelled = [r for r in aset.images if len(r)]
    train, val = split_fixed(labelled, cfg.val_fraction)
    parent = registry.active("detector")
    arch, arch_args, weights = cfg.arch, dict(cfg.arch_args), cfg.weights
    if parent is not None:
        parent_ckpt = load_checkpoint(registry.path(parent))
        arch, arch_args, weights = parent_ckpt["arch"], dict(parent_ckpt["arch_args"]), str(registry.path(parent))

    work = registry.folder / ".work" / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=False)
    batch = cfg.batch or 2
    if len(train) < batch:  # batch norm cannot train on a batch of one: repeat the few images (augmented)
        train = train * -(-batch // len(train))
    for name, recs in (("train", train), ("val", val)):
        write_coco(AnnotationSet(aset.classes, recs), work / f"{name}.json",
                   file_names=[str(r.path) for r in recs])
    train_cfg = DetectorTrainConfig(
        arch=arch, data=work / "train.json", val=work / "val.json", out=work / "model.pt", epochs=cfg.epochs,
        batch=batch, lr=cfg.lr, optimizer=cfg.optimizer, weights=weights, device=cfg.device,
        arch_args=arch_args, max_iters_per_epoch=cfg.max_iters_per_epoch, warmup_iters=20,
        command=cfg.command or " ".join(sys.argv),
    )
    try:
        result = yield from train_detector(train_cfg)
    except BaseException:  # cancelled or failed: nothing was registered, and the scratch folder goes
        shutil.rmtree(work, ignore_errors=True)
        raise
    if not result["history"]:
        raise BloodcellInputError("the run finished without a validated epoch; nothing was registered")
    metrics = dict(result["best"])
    parent_metrics = None
    if parent is not None:
        yield {"phase": "compare", "message": f"scoring the active model {parent['id']} on the same split"}
        device = as_device(cfg.device)
        model, _ = detector_from_checkpoint(registry.path(parent), device)
        if list(model.classes) == list(aset.classes):
            parent_metrics = evaluate_model(model, val, aset.classes, device)
    better = parent_metrics is None or metrics["mAP50"] > parent_metrics["mAP50"]
    if parent is None:
        reason = "first detector"
    elif parent_metrics is None:
        reason = "class list changed: the active model cannot be scored on this dataset"
    else:
        reason = (f"mAP@0.5 {metrics['mAP50']:.3f} vs {parent_metrics['mAP50']:.3f} of {parent['id']} on "
                  f"{len(val)} validation image(s)")
    return register_version(
        cfg, registry, work, "detector", parent, entry, metrics, parent_metrics, better, reason, train_cfg.command,
        {"arch": arch, "classes": list(aset.classes), "val_images": [Path(r.file_name).stem for r in val],
         "initial_weights": result["initial_weights"], "device": result["device"]})


def register_version(cfg: RetrainConfig, registry, work: Path, task: str, parent: dict[str, Any] | None,
                     entry: dict[str, Any], metrics: dict[str, Any], parent_metrics: dict[str, Any] | None,
                     better: bool, reason: str, command: str, extra: dict[str, Any]) -> RetrainResult:
    """Register the trained model (always), activate it when the policy says so, and clear the scratch folder."""
    activate = cfg.activate == "always" or (cfg.activate == "if-better" and better)
    if cfg.activate == "always" and not better:
        reason += "; activated on request"
    version = registry.add(
        work / "model.pt", task, parent=parent["id"] if parent else None, dataset=str(Path(cfg.dataset).resolve()),
        dataset_version=entry["version"], metrics=metrics, parent_metrics=parent_metrics, command=command,
        by=cfg.by, activate=activate, reason=reason, extra=extra,
    )
    shutil.rmtree(work, ignore_errors=True)
    return RetrainResult(version, activate, metrics, parent["id"] if parent else None, parent_metrics, reason)
