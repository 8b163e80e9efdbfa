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
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, Literal

from ..errors import BloodcellInputError
from ..io.records import AnnotationSet, ImageRecord
from ..progress import Progress

ActivatePolicy = Literal["if-better", "always", "never"]
DEFAULT_ARCH = "auto"
"""A first detector starts from the bundled starter model (``v0000``) when the package ships one, else is a
YOLOv3-tiny trained from ``weights``."""
FIRST_ARCH = "yolov3_tiny"


@dataclasses.dataclass
class RetrainConfig:
    dataset: str | Path
    registry: str | Path | None = None
    dataset_version: int | None = None
    arch: str = DEFAULT_ARCH
    """Used only when no detector is active yet: ``auto`` fine-tunes the bundled starter detector (or trains a
    YOLOv3-tiny when none is shipped); an architecture name trains a first model from ``weights``."""
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


@dataclasses.dataclass
class RetrainContext:
    """What every task's retraining starts from: the registry, the dataset version, the active model (parent)
    and the scratch folder the run trains in."""

    cfg: RetrainConfig
    registry: Any
    dataset: Path
    entry: dict[str, Any]
    parent: dict[str, Any] | None
    work: Path

    @property
    def parent_path(self) -> Path | None:
        return self.registry.path(self.parent) if self.parent else None

    @property
    def command(self) -> str:
        return self.cfg.command or " ".join(sys.argv)


@dataclasses.dataclass
class RetrainPlan:
    """A task's part of a retrain: how to train, how to read the result, and how to score the parent on the same
    validation split (``score_parent`` returns None, with ``unscorable`` saying why, when it cannot)."""

    train: Callable[[], Generator[Progress, None, dict[str, Any]]]
    metrics_of: Callable[[dict[str, Any]], dict[str, Any]]
    score_parent: Callable[[], Generator[Progress, None, dict[str, Any] | None]]
    extra_of: Callable[[dict[str, Any]], dict[str, Any]]
    n_val: int
    unscorable: str = "the active model cannot be scored on this dataset"


def retrain(cfg: RetrainConfig) -> Generator[Progress, None, RetrainResult]:
    """The one retrain skeleton: registry → parent → work folder → train → compare → register. Yields the
    training's progress, then a ``compare`` event. A cancelled or failed run registers nothing and removes its
    work folder."""
    from ..io.dataset import version_entry
    from ..models.registry import ModelRegistry
    from ..tasks import task

    spec = task(cfg.task)
    if cfg.activate not in ("if-better", "always", "never"):
        raise BloodcellInputError(f"activate must be if-better, always or never; got {cfg.activate!r}")
    registry = ModelRegistry(cfg.registry)
    dataset = Path(cfg.dataset).resolve()
    entry = version_entry(dataset, cfg.dataset_version)
    parent = registry.active(spec.name)
    if parent is None and cfg.arch == "auto":
        from ..models.bundled import bundled_entry

        parent = bundled_entry(spec.name)  # the shipped model, v0000
    work = registry.folder / ".work" / time.strftime(f"{spec.name}-%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=False)
    ctx = RetrainContext(cfg, registry, dataset, entry, parent, work)
    try:
        plan = PLANNERS[spec.name](ctx)
        result = yield from plan.train()
        metrics = plan.metrics_of(result)
        parent_metrics = None
        if parent is not None:
            yield Progress("compare", message=f"scoring the active {spec.name} {parent['id']} on the same split")
            parent_metrics = yield from plan.score_parent()
    except BaseException:  # cancelled, killed or failed: nothing was registered, and the scratch folder goes
        shutil.rmtree(work, ignore_errors=True)
        raise
    new, old = spec.score(metrics), spec.score(parent_metrics)
    better = parent_metrics is None or new > old
    label = spec.label_of(metrics)
    if parent is None:
        reason = f"first {spec.name}"
    elif parent_metrics is None:
        reason = plan.unscorable
    else:
        reason = f"{label} {new:.3f} vs {old:.3f} of {parent['id']} on {plan.n_val} validation {spec.unit}(s)"
    try:
        return register_version(cfg, registry, work, spec.name, parent, entry, metrics, parent_metrics, better,
                                reason, ctx.command, plan.extra_of(result))
    finally:  # registered or refused (a registry that cannot be written): the scratch folder goes either way
        shutil.rmtree(work, ignore_errors=True)


def retrain_detector(cfg: RetrainConfig) -> Generator[Progress, None, RetrainResult]:
    return retrain(dataclasses.replace(cfg, task="detector"))


def plan_detector(ctx: RetrainContext) -> RetrainPlan:
    """Fine-tune the active detector (or train a first one) on the dataset's fixed image split."""
    from ..device import as_device
    from ..io.coco import read_coco, write_coco
    from ..io.dataset import dataset_coco_path
    from ..models.checkpoints import detector_from_checkpoint, load_checkpoint
    from .detection import DetectorTrainConfig, evaluate_model, train_detector

    cfg = ctx.cfg
    aset = read_coco(dataset_coco_path(ctx.dataset, ctx.entry["version"]))
    labelled = [r for r in aset.images if len(r)]
    train, val = split_fixed(labelled, cfg.val_fraction)
    arch, arch_args, weights = cfg.arch, dict(cfg.arch_args), cfg.weights
    if arch == "auto":
        arch = FIRST_ARCH
    if ctx.parent is not None:
        parent_ckpt = load_checkpoint(ctx.parent_path)
        arch, arch_args, weights = parent_ckpt["arch"], dict(parent_ckpt["arch_args"]), str(ctx.parent_path)
    batch = cfg.batch or 2
    if len(train) < batch:  # batch norm cannot train on a batch of one: repeat the few images (augmented)
        train = train * -(-batch // len(train))
    for name, recs in (("train", train), ("val", val)):
        write_coco(AnnotationSet(aset.classes, recs), ctx.work / f"{name}.json",
                   file_names=[str(r.path) for r in recs])
    train_cfg = DetectorTrainConfig(
        arch=arch, data=ctx.work / "train.json", val=ctx.work / "val.json", out=ctx.work / "model.pt",
        epochs=cfg.epochs, batch=batch, lr=cfg.lr, optimizer=cfg.optimizer, weights=weights, device=cfg.device,
        arch_args=arch_args, max_iters_per_epoch=cfg.max_iters_per_epoch, warmup_iters=20, command=ctx.command)

    def metrics_of(result: dict[str, Any]) -> dict[str, Any]:
        if not result["history"]:
            raise BloodcellInputError("the run finished without a validated epoch; nothing was registered")
        return dict(result["best"])

    def score_parent() -> Generator[Progress, None, dict[str, Any] | None]:
        device = as_device(cfg.device)
        model, _ = detector_from_checkpoint(ctx.parent_path, device)
        yield Progress("validate", 0, len(val), message=f"scoring {ctx.parent['id']} on {len(val)} image(s)")
        return evaluate_model(model, val, aset.classes, device) if list(model.classes) == list(aset.classes) else None

    return RetrainPlan(
        train=lambda: train_detector(train_cfg), metrics_of=metrics_of, score_parent=score_parent,
        extra_of=lambda r: {"arch": arch, "classes": list(aset.classes), "val_images": [Path(x.file_name).stem
                            for x in val], "initial_weights": r["initial_weights"], "device": r["device"]},
        n_val=len(val), unscorable="class list changed: the active model cannot be scored on this dataset")


def register_version(cfg: RetrainConfig, registry, work: Path, task: str, parent: dict[str, Any] | None,
                     entry: dict[str, Any], metrics: dict[str, Any], parent_metrics: dict[str, Any] | None,
                     better: bool, reason: str, command: str, extra: dict[str, Any]) -> RetrainResult:
    """Register the trained model (always) and activate it when the policy says so (:func:`retrain` clears the
    scratch folder, registered or not)."""
    activate = cfg.activate == "always" or (cfg.activate == "if-better" and better)
    if cfg.activate == "always" and not better:
        reason += "; activated on request"
    version = registry.add(
        work / "model.pt", task, parent=parent["id"] if parent else None, dataset=str(Path(cfg.dataset).resolve()),
        dataset_version=entry["version"], metrics=metrics, parent_metrics=parent_metrics, command=command,
        by=cfg.by, activate=activate, reason=reason, extra=extra,
    )
    return RetrainResult(version, activate, metrics, parent["id"] if parent else None, parent_metrics, reason)


def _planners() -> dict[str, Callable[[RetrainContext], RetrainPlan]]:
    from .retrain_classifier import plan_classifier
    from .retrain_segmenter import plan_segmenter

    return {"detector": plan_detector, "classifier": plan_classifier, "segmenter": plan_segmenter}


class _Planners(dict):
    """Each task's planner, imported when first asked for (the classifier's and segmenter's modules import this
    one)."""

    def __missing__(self, name: str) -> Callable[[RetrainContext], RetrainPlan]:
        self.update(_planners())
        return dict.__getitem__(self, name)


PLANNERS: dict[str, Callable[[RetrainContext], RetrainPlan]] = _Planners()
