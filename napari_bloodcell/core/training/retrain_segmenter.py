"""One-click retraining of the 3D segmenter from corrected label maps, with the registry's versions and rollback.

The dataset is a segmentation dataset written by :mod:`..export_volumes`. Its validation cases are a fixed split
(a case is in it when the hash of its name falls below the fraction), so a version and its parent are always
scored on the same cases, by whole-volume sliding-window Dice averaged over the foreground labels. The first
segmenter trains from random weights; later ones fine-tune the active one (its classifier is replaced if the label
set changed), optionally with early stages frozen. "Epochs" are rounds of ``max_iters_per_epoch`` iterations
(default 100) each followed by a validation, since patch training has no natural epoch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import Any

from ..progress import Progress
from .retrain import RetrainConfig, RetrainContext, RetrainPlan, RetrainResult, retrain

DEFAULT_PATCH = 48
ROUND = 100


def retrain_segmenter(cfg: RetrainConfig) -> Generator[Progress, None, RetrainResult]:
    """The shared skeleton (:func:`.retrain.retrain`) with the segmenter's plan."""
    return retrain(dataclasses.replace(cfg, task="segmenter"))


def plan_segmenter(ctx: RetrainContext) -> RetrainPlan:
    """Fine-tune the active segmenter (or train a first one) on the dataset's fixed case split; a round is
    ``max_iters_per_epoch`` iterations (default 100)."""
    from ..datasets.volumes import find_cases, label_names_for, split_cases
    from ..device import as_device
    from ..inference.segment3d import load_segmenter
    from ..models.checkpoints import load_checkpoint
    from ..tasks import TASKS
    from .segmentation import SegmenterTrainConfig, read_cases, train_segmenter, validate

    cfg, parent = ctx.cfg, ctx.parent
    cases = find_cases(ctx.dataset, ctx.entry["version"])  # refuses a box dataset
    train, val = split_cases(cases, cfg.val_fraction)
    parent_ckpt = load_checkpoint(ctx.parent_path, expect=TASKS["segmenter"].format) if parent else None
    patch = tuple(parent_ckpt["preprocessing"]["patch"]) if parent_ckpt else (cfg.patch or DEFAULT_PATCH,) * 3
    per_round = cfg.max_iters_per_epoch or ROUND
    train_cfg = SegmenterTrainConfig(
        data=ctx.dataset, out=ctx.work / "model.pt", cases=train, val_cases=val,
        label_names=label_names_for(ctx.dataset), iterations=cfg.epochs * per_round, val_every=per_round,
        patch=patch, batch=cfg.batch or 2, lr=cfg.lr or 1e-3, init=ctx.parent_path, freeze=list(cfg.freeze),
        device=cfg.device, command=ctx.command)
    label_values: list[int] = []

    def metrics_of(result: dict[str, Any]) -> dict[str, Any]:
        label_values[:] = list(result["label_names"])
        return {"mean_dice": result["best"]["mean_dice"],
                **{f"dice_{k}": v for k, v in result["best"]["dice"].items()}}

    def score_parent() -> Generator[Progress, None, dict[str, Any] | None]:
        old = load_segmenter(ctx.parent_path, as_device(cfg.device))
        if old.label_values != label_values:
            return None
        images, labels, _ = read_cases(val)
        scores = yield from validate(old.model, images, labels, old.label_values, patch, 0.25, old.device, True)
        names = old.label_names
        return {"mean_dice": scores["mean_dice"], **{f"dice_{names.get(v, v)}": d for v, d in scores["dice"].items()}}

    return RetrainPlan(
        train=lambda: train_segmenter(train_cfg), metrics_of=metrics_of, score_parent=score_parent,
        extra_of=lambda r: {"arch": "highres3dnet", "classes": list(r["label_names"].values()),
                            "val_cases": [c.name for c in val], "initial_weights": r["initial_weights"],
                            "device": r["device"], "frozen": r["frozen"], "n_train": len(train), "n_val": len(val)},
        n_val=len(val), unscorable="label set changed: the active segmenter cannot be scored on this dataset")
