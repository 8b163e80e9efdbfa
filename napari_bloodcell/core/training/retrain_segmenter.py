"""One-click retraining of the 3D segmenter from corrected label maps, with the registry's versions and rollback.

The dataset is a segmentation dataset written by :mod:`..export_volumes`. Its validation cases are a fixed split
(a case is in it when the hash of its name falls below the fraction), so a version and its parent are always
scored on the same cases, by whole-volume sliding-window Dice averaged over the foreground labels. The first
segmenter trains from random weights; later ones fine-tune the active one (its classifier is replaced if the label
set changed), optionally with early stages frozen. "Epochs" are rounds of ``max_iters_per_epoch`` iterations
(default 100) each followed by a validation, since patch training has no natural epoch.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from .retrain import RetrainConfig, RetrainResult, register_version

DEFAULT_PATCH = 48
ROUND = 100


def retrain_segmenter(cfg: RetrainConfig) -> Generator[dict[str, Any], None, RetrainResult]:
    """Yields training progress (in the retrain panel's epoch/iteration terms), then ``{"phase": "compare"}``."""
    from ..datasets.volumes import find_cases, label_names_for, split_cases
    from ..inference.segment3d import FORMAT, load_segmenter
    from ..io.dataset import version_entry
    from ..models.checkpoints import load_checkpoint
    from ..device import as_device
    from ..models.registry import ModelRegistry
    from .segmentation import (
        SegmenterTrainConfig,
        read_cases,
        train_segmenter,
        validate,
    )

    registry = ModelRegistry(cfg.registry)
    dataset = Path(cfg.dataset).resolve()
    entry = version_entry(dataset, cfg.dataset_version)
    cases = find_cases(dataset, entry["version"])  # refuses a box dataset
    train, val = split_cases(cases, cfg.val_fraction)
    parent = registry.active("segmenter")
    parent_ckpt = load_checkpoint(registry.path(parent), expect=FORMAT) if parent else None  # its patch only
    patch = tuple(parent_ckpt["preprocessing"]["patch"]) if parent_ckpt else (cfg.patch or DEFAULT_PATCH,) * 3
    per_round = cfg.max_iters_per_epoch or ROUND
    work = registry.folder / ".work" / time.strftime("segmenter-%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=False)
    train_cfg = SegmenterTrainConfig(
        data=dataset, out=work / "model.pt", cases=train, val_cases=val, label_names=label_names_for(dataset),
        iterations=cfg.epochs * per_round, val_every=per_round, patch=patch, batch=cfg.batch or 2,
        lr=cfg.lr or 1e-3, init=registry.path(parent) if parent else None, freeze=list(cfg.freeze),
        device=cfg.device, command=cfg.command or " ".join(sys.argv))
    started = time.perf_counter()
    job = train_segmenter(train_cfg)
    try:
        while True:
            try:
                item = next(job)
            except StopIteration as stop:
                result = stop.value
                break
            if item["phase"] == "train":
                done = item["iteration"]
                item = {**item, "epoch": (done - 1) // per_round + 1, "epochs": cfg.epochs,
                        "iter": (done - 1) % per_round + 1, "iters": per_round,
                        "eta_s": (time.perf_counter() - started) / done * (train_cfg.iterations - done)}
            elif item["phase"] == "val":
                item = {**item, "epoch": item["iteration"] // per_round, "epochs": cfg.epochs}
            yield item
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    metrics = {"mean_dice": result["best"]["mean_dice"], **{f"dice_{k}": v for k, v in result["best"]["dice"].items()}}
    parent_metrics = None
    if parent is not None:
        yield {"phase": "compare", "message": f"scoring the active segmenter {parent['id']} on the same cases"}
        old = load_segmenter(registry.path(parent), as_device(cfg.device))
        if old.label_values == list(result["label_names"]):
            images, labels, _ = read_cases(val)
            scores = yield from validate(old.model, images, labels, old.label_values, patch, 0.25, old.device, True)
            names = old.label_names
            parent_metrics = {"mean_dice": scores["mean_dice"],
                              **{f"dice_{names.get(v, v)}": d for v, d in scores["dice"].items()}}
    better = parent_metrics is None or metrics["mean_dice"] > parent_metrics["mean_dice"]
    if parent is None:
        reason = "first segmenter"
    elif parent_metrics is None:
        reason = "label set changed: the active segmenter cannot be scored on this dataset"
    else:
        reason = (f"mean Dice {metrics['mean_dice']:.3f} vs {parent_metrics['mean_dice']:.3f} of {parent['id']} on "
                  f"{len(val)} validation case(s)")
    return register_version(
        cfg, registry, work, "segmenter", parent, entry, metrics, parent_metrics, better, reason, train_cfg.command,
        {"arch": "highres3dnet", "classes": list(result["label_names"].values()),
         "val_cases": [c.name for c in val], "initial_weights": result["initial_weights"],
         "device": result["device"], "frozen": result["frozen"], "n_train": len(train), "n_val": len(val)})
