"""Training HighRes3DNet on labelled volumes, and transferring a trained one to a new task (thesis, chapter 6).

The recipe is the thesis's: windows from a class-weighted sampler, z-scored intensities, rotation ±10° and scaling
±10%, Adam at 1e-3 with L2 weight decay, batch 2, a Dice loss (here Dice + cross-entropy: the Dice term handles the
imbalance, the cross-entropy keeps early gradients useful when a class is absent from a window). Training counts
iterations, not epochs, as NiftyNet does. Every ``val_every`` iterations the whole validation volumes are segmented
by the sliding window and scored (Dice per label); the best state is written to ``out`` and the latest, with the
optimiser, to ``out.last.pt`` so an interrupted run resumes where it stopped.

Transfer: ``init`` names a segmenter checkpoint; its weights are loaded, its classifier (``conv_2``) is replaced
when the label set differs, and ``freeze`` stops any of ``conv_0``, ``res_1``, ``res_2``, ``res_3`` learning.
The run reports seconds per iteration, split into window sampling and the optimiser step, so the saving from
freezing can be read off directly.
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
import torch.nn.functional as F

from ..errors import BloodcellInputError
from ..progress import Progress
from ..tasks import TASKS
from .engine import Fit, check_resume, fit, last_path, read_last

ARCH = "highres3dnet"
FORMAT = TASKS["segmenter"].format


@dataclasses.dataclass
class SegmenterTrainConfig:
    data: str | Path
    out: str | Path
    val: str | Path | None = None
    """A separate folder of validation cases; without it ``val_fraction`` of ``data``'s case groups."""
    val_fraction: float = 0.2
    pair_cases: bool = False
    """Keep cases 2k-1 and 2k (left/right crops of one scan, as in MSD hippocampus) on one side of the split."""
    dataset_version: int | None = None
    iterations: int = 1000
    val_every: int = 100
    patch: tuple[int, int, int] = (96, 96, 96)
    val_patch: tuple[int, int, int] | None = None
    overlap: float = 0.25
    batch: int = 2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    sampler: str = "weighted"
    augment: bool = True
    init: str | Path | None = None
    freeze: list[str] = dataclasses.field(default_factory=list)
    arch_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    resume: bool = False
    """Continue the run whose ``out.last.pt`` is there (left by Cancel, a crash or ``keep_last``)."""
    keep_last: bool = False
    label_names: dict[int, str] | None = None
    command: str = ""
    cases: list[Any] | None = None
    """Training cases given directly (a list of :class:`~..datasets.volumes.Case`) instead of ``data``."""
    val_cases: list[Any] | None = None


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Cross-entropy + (1 − soft Dice averaged over classes), Dice sums taken over the whole batch."""
    ce = F.cross_entropy(logits, target)
    probs = torch.softmax(logits, dim=1)
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(probs.dtype)
    dims = (0, *range(2, logits.ndim))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return ce + (1.0 - ((2 * inter + eps) / (denom + eps)).mean())


def _load_cases(cfg: SegmenterTrainConfig):
    from ..datasets.volumes import find_cases, label_names_for, split_cases

    if cfg.cases is not None:
        train, val = list(cfg.cases), list(cfg.val_cases or [])
        names = dict(cfg.label_names or {})
    else:
        cases = find_cases(cfg.data, cfg.dataset_version)
        names = {**label_names_for(cfg.data), **(cfg.label_names or {})}
        if cfg.val is not None:
            train, val = cases, find_cases(cfg.val)
        else:
            train, val = split_cases(cases, cfg.val_fraction, cfg.pair_cases)
    if not train or not val:
        raise BloodcellInputError(f"need at least 1 training and 1 validation case; have {len(train)} and {len(val)}")
    return train, val, names


def read_cases(cases) -> tuple[list[np.ndarray], list[np.ndarray], list[Any]]:
    from ..datasets.volumes import load_case

    images, labels, vols = [], [], []
    for c in cases:
        img, lab, vol = load_case(c)
        images.append(img)
        labels.append(lab)
        vols.append(vol)
    return images, labels, vols


def _initial_model(cfg: SegmenterTrainConfig, in_channels: int, n_classes: int, label_values: list[int],
                   device: torch.device) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]:
    """A fresh network, or (transfer) the one in ``cfg.init`` with a new classifier when the labels differ."""
    from ..inference.segment3d import build_segmenter_model, load_segmenter
    from ..models.checkpoints import file_digest
    from ..models.highres3dnet import replace_classifier

    if cfg.init is None:
        args = {"in_channels": in_channels, "n_classes": n_classes, **cfg.arch_args}
        return build_segmenter_model(ARCH, args).to(device), args, {"initial_weights": "none"}
    source = load_segmenter(cfg.init, device)
    args = dict(source.checkpoint["arch_args"])
    if int(args["in_channels"]) != in_channels:
        raise BloodcellInputError(f"the starting model takes {args['in_channels']} channel(s); this data has "
                                  f"{in_channels}", cfg.init)
    model = source.model
    same_labels = source.label_values == label_values
    if not same_labels:
        replace_classifier(model, n_classes)  # type: ignore[arg-type]
        args["n_classes"] = n_classes
    return model, args, {"initial_weights": f"{Path(cfg.init).name}@{file_digest(cfg.init, 8)}",
                         "transfer": {"from": str(cfg.init), "replaced_classifier": not same_labels,
                                      "source_labels": source.checkpoint.get("label_names", {})}}


def validate(model: torch.nn.Module, images: list[np.ndarray], labels: list[np.ndarray], label_values: list[int],
             patch: tuple[int, int, int], overlap: float, device: torch.device,
             amp: bool) -> Generator[Progress, None, dict[str, Any]]:
    """Segment each validation volume whole (sliding window) and score Dice per foreground label."""
    from ..inference.segment3d import sliding_window
    from ..progress import drain
    from ..segmentation_metrics import dice

    per_label: dict[int, list[float]] = {v: [] for v in label_values[1:]}
    for k, (img, lab) in enumerate(zip(images, labels)):
        probs = drain(sliding_window(model, img, patch, overlap, "gaussian", 2, device, amp))
        pred = np.asarray(label_values)[probs.argmax(0)]
        for v in per_label:
            per_label[v].append(dice(pred == v, lab == v))
        yield Progress("validate", k + 1, len(images))
    means = {v: float(np.mean(d)) for v, d in per_label.items()}
    return {"dice": means, "mean_dice": float(np.mean(list(means.values()))) if means else math.nan}


def train_segmenter(cfg: SegmenterTrainConfig) -> Generator[Progress, None, dict[str, Any]]:
    """Train through the engine (:mod:`.engine`), in rounds of ``val_every`` iterations each followed by a
    validation; returns the history, best scores and timings."""
    from ..datasets.patches import PatchSampler
    from ..datasets.volumes import label_values_of
    from ..device import as_device
    from ..models.highres3dnet import (
        count_trainable,
        freeze_stages,
        keep_frozen_in_eval,
    )

    from . import distributed

    out = Path(cfg.out)
    last = last_path(out)
    check_resume(out, cfg.resume)
    distributed.check_batch(cfg.batch)
    if cfg.iterations < 1 or cfg.val_every < 1 or cfg.batch < 1:
        raise BloodcellInputError(f"iterations, val_every and batch must be at least 1; got {cfg.iterations}, "
                                  f"{cfg.val_every}, {cfg.batch}")
    if cfg.lr <= 0 or cfg.weight_decay < 0:
        raise BloodcellInputError(f"lr must be above 0 and weight decay at least 0; got {cfg.lr}, {cfg.weight_decay}")
    device = as_device(cfg.device)
    torch.manual_seed(cfg.seed)
    train_cases, val_cases, names = _load_cases(cfg)
    yield Progress("load", message=f"reading {len(train_cases)} training and {len(val_cases)} validation cases")
    images, labels, vols = read_cases(train_cases)
    v_images, v_labels, _ = read_cases(val_cases)
    channels = {img.shape[0] for img in images + v_images}
    if len(channels) != 1:
        raise BloodcellInputError(f"cases have different numbers of channels {sorted(channels)}")
    label_values = label_values_of(labels)
    lut = np.zeros(max(label_values + [int(lab.max()) for lab in v_labels]) + 1, dtype=np.int64)
    lut[label_values] = np.arange(len(label_values))
    label_names = {v: names.get(v, "background" if v == 0 else f"label {v}") for v in label_values}
    model, arch_args, origin = _initial_model(cfg, channels.pop(), len(label_values), label_values, device)
    frozen = freeze_stages(model, cfg.freeze)  # type: ignore[arg-type]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sampler = PatchSampler(images, [lut[lab] for lab in labels], len(label_values), cfg.patch, cfg.sampler,
                           cfg.augment, seed=cfg.seed)
    spacing = [float(np.median([v.spacing[a] for v in vols])) for a in range(3)]
    preprocessing = {"normalise": "zscore per volume and channel", "patch": list(cfg.patch), "spacing": spacing,
                     "channels": model.in_channels, "sampler": cfg.sampler, "augment": cfg.augment,
                     "rotation_degrees": 10.0 if cfg.augment else 0.0, "scaling": 0.1 if cfg.augment else 0.0}
    command = cfg.command or " ".join(sys.argv)
    # Rounds count from where a resumed run stopped, in this run's val_every (which may differ from the first run's)
    resume = read_last(last) if cfg.resume else None
    start = int(resume["engine"]["round"]) if resume else 0
    done = int(resume["engine"]["history"][-1]["iteration"]) if resume and resume["engine"]["history"] else 0
    if cfg.iterations <= done:
        raise BloodcellInputError(f"the run already has {done} iterations; ask for more than that to continue it")
    rounds = start + -(-(cfg.iterations - done) // cfg.val_every)
    val_patch = tuple(cfg.val_patch or cfg.patch)
    timing = {"sample": 0.0, "step": 0.0, "n": 0}

    def first_iteration(round_: int) -> int:
        return done + (round_ - start) * cfg.val_every

    def iters(round_: int) -> int:
        return min(cfg.val_every, cfg.iterations - first_iteration(round_))

    def batches(round_: int):
        """Windows drawn from (seed, round): a resumed run draws what an uninterrupted one would. Across processes
        every rank draws the global batch and keeps its share (exactly one process's batches; sampling is not
        divided, the step is)."""
        sampler.rng = np.random.default_rng([cfg.seed, round_])
        while True:
            t0 = time.perf_counter()
            x, y = distributed.shard(sampler.batch(cfg.batch))
            t1 = time.perf_counter()
            yield x.to(device), y.to(device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timing["sample"] += t1 - t0
            timing["step"] += time.perf_counter() - t1
            timing["n"] += 1

    def loss(batch, net=model) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch
        return dice_ce_loss(net(x).float(), y), {}

    def train_mode() -> None:
        model.train()
        keep_frozen_in_eval(model)

    def validate_round(round_: int) -> Generator[Progress, None, dict[str, Any]]:
        scores = yield from validate(model, v_images, v_labels, label_values, val_patch, cfg.overlap, device, cfg.amp)
        return {"iteration": first_iteration(round_) + iters(round_), "mean_dice": scores["mean_dice"],
                "dice": {label_names[v]: d for v, d in scores["dice"].items()}}

    def describe(metrics: dict[str, Any], round_: int) -> dict[str, Any]:
        return {"format": FORMAT, "arch": ARCH, "arch_args": arch_args,
                "classes": [label_names[v] for v in label_values], "label_values": label_values,
                "label_names": {str(v): n for v, n in label_names.items()}, "preprocessing": preprocessing,
                "metrics": metrics, "iteration": int(metrics.get("iteration", 0)), "frozen": frozen,
                "command": command, "train_cases": [c.name for c in train_cases],
                "val_cases": [c.name for c in val_cases], **origin}

    fitted = yield from fit(Fit(
        model=model, optimizer=optimizer, device=device, rounds=rounds, iters=iters, batches=batches, loss=loss,
        validate=validate_round, describe=describe, metric="mean_dice", out=out, train_mode=train_mode,
        seed=cfg.seed, amp=cfg.amp, resume=resume, keep_last=cfg.keep_last,
        round_name="round"))
    if not distributed.is_main():
        return {"rank": distributed.rank()}
    n = max(timing["n"], 1)
    return {"out": str(out), "best": fitted.best, "history": fitted.history, "device": str(device),
            "frozen": frozen, "trainable_parameters": count_trainable(model), "n_train": len(train_cases),
            "n_val": len(val_cases), "label_names": label_names, "sampling_s_per_iter": timing["sample"] / n,
            "step_s_per_iter": timing["step"] / n, "iterations_run": timing["n"], **origin}
