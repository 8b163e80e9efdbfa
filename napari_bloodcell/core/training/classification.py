"""Training a cell classifier: a generator that yields progress and writes the best checkpoint.

Settings the papers used, all selectable:

* what trains (``mode``): ``all`` layers or the ``last`` layer only (paper 000's two settings; frozen layers keep
  their batch-norm statistics too), or ``discriminative`` learning rates (the thesis, after fastai: the first
  half of the body at lr/100, the second at lr/10, the head at lr);
* optimiser: ``rmsprop`` (paper 000: decay 0.9), ``adam``, or ``sgd`` with Nesterov momentum (paper 003);
* early stopping on the validation loss with ``patience`` epochs (paper 003: 10); the checkpoint written is the
  epoch with the lowest validation loss;
* class imbalance: class-weighted loss (paper 003) or a class-balanced sampler (the thesis's oversampling);
* augmentation (paper 000): crop distortion, flips, right-angle turns, hue/brightness/saturation/contrast jitter;
* multi-label (paper 001): one sigmoid output per label, binary cross-entropy, threshold 0.5.

The frozen-feature SVM and the gradient-boosting screen are in :mod:`.feature_svm`.
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
from torch import nn

from ..errors import BloodcellInputError
from ..progress import Progress
from .engine import Fit, check_resume, fit, last_path, round_generator, storable

MODES = ("all", "last", "discriminative")
OPTIMIZERS = ("rmsprop", "adam", "sgd")
BALANCE = ("weights", "sampler", "none")
DEFAULT_LR = {"rmsprop": 1e-4, "adam": 1e-4, "sgd": 1e-3}


@dataclasses.dataclass
class ClassifierTrainConfig:
    arch: str = "resnet50"
    data: str | Path | None = None
    out: str | Path | None = None
    val: str | Path | None = None
    val_fraction: float = 0.2
    images: list[str] = dataclasses.field(default_factory=list)
    """Extra folders to find a label CSV's images in."""
    boxes: str | Path | None = None
    """Annotations whose ``box_class`` boxes are the cells of a label CSV's images."""
    box_class: str | None = None
    classes: list[str] | None = None
    drop_classes: list[str] = dataclasses.field(default_factory=list)
    min_count: int = 0
    multilabel: bool = False
    mode: str = "all"
    optimizer: str = "rmsprop"
    lr: float | None = None
    weight_decay: float = 1e-4
    epochs: int = 30
    batch: int = 16
    patience: int = 10
    balance: str = "weights"
    augment: bool = True
    context: float = 0.15
    input_size: int | None = None
    weights: str = "none"
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    """Continue the run whose ``out.last.pt`` is there (left by Cancel, a crash or ``keep_last``)."""
    keep_last: bool = False
    max_iters_per_epoch: int | None = None
    feature_layer: str | None = None
    """SVM only: the layer whose output is the feature vector (default ``fc7`` for vgg16, else ``pool``)."""
    svm_c: float = 1.0
    screen_normal: list[str] | None = None
    """Multi-label only: the labels that are normal; a gradient-boosting screen then learns 'any other label'."""
    command: str = ""
    train_samples: Any = None
    """A ready :class:`SampleSet` (cross-validation, retraining) instead of ``data``."""
    val_samples: Any = None
    test_samples: Any = None
    """Cells scored once with the best epoch's weights (the held-out fold of a cross-validation)."""


def check_config(cfg: ClassifierTrainConfig) -> None:
    for name, value, allowed in (("mode", cfg.mode, MODES), ("optimizer", cfg.optimizer, OPTIMIZERS),
                                 ("balance", cfg.balance, BALANCE)):
        if value not in allowed:
            raise BloodcellInputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    if cfg.epochs < 1 or cfg.batch < 2:
        raise BloodcellInputError(f"epochs must be at least 1 and batch at least 2; got {cfg.epochs}, {cfg.batch}")


def training_samples(cfg: ClassifierTrainConfig):
    """The (train, validation) sample sets: given, or loaded and split by image."""
    from ..datasets.classification import group_split, load_samples

    if cfg.train_samples is not None:
        return cfg.train_samples, cfg.val_samples
    if cfg.data is None:
        raise BloodcellInputError("no training data given")
    load = lambda p: load_samples(p, cfg.images, cfg.boxes, cfg.box_class, cfg.classes, cfg.multilabel)
    sset = load(cfg.data).without(cfg.drop_classes, cfg.min_count)
    if cfg.val is not None:
        val = load(cfg.val)
        if val.classes != sset.classes:
            val = reindex_classes(val, sset.classes)
        return sset, val
    if cfg.val_fraction <= 0:  # every sample (cross-validation splits them itself)
        return sset, None
    train_idx, val_idx = group_split(sset, cfg.val_fraction)
    return sset.subset(train_idx), sset.subset(val_idx)


def reindex_classes(sset, classes: list[str]):
    unknown = [c for c in sset.classes if c not in classes and sset.counts()[c]]
    if unknown:
        raise BloodcellInputError(f"validation classes {unknown} are not among the training classes {classes}")
    if sset.multilabel:
        cols = [sset.classes.index(c) if c in sset.classes else None for c in classes]
        fix = lambda t: np.array([t[j] if j is not None else 0.0 for j in cols], np.float32)
    else:
        fix = lambda t: classes.index(sset.classes[int(t)])
    return dataclasses.replace(sset, classes=list(classes),
                               samples=[dataclasses.replace(s, target=fix(s.target)) for s in sset.samples])


def class_weights(sset) -> torch.Tensor:
    """Inverse-frequency weights (n / (k * count)) so each class weighs the same in the loss (paper 003)."""
    t = sset.targets()
    if sset.multilabel:
        pos = t.sum(0)
        return torch.tensor((len(t) - pos) / np.maximum(pos, 1), dtype=torch.float32)  # BCE pos_weight
    counts = np.bincount(t, minlength=len(sset.classes)).astype(float)
    return torch.tensor(len(t) / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32)


def make_optimizer(model, cfg: ClassifierTrainConfig, lr: float) -> torch.optim.Optimizer:
    head, body = model.head_parameters(), model.body_parameters()
    if cfg.mode == "last":
        for p in body:
            p.requires_grad_(False)
        groups = [{"params": head, "lr": lr}]
    elif cfg.mode == "discriminative":
        half = len(body) // 2
        groups = [{"params": body[:half], "lr": lr / 100}, {"params": body[half:], "lr": lr / 10},
                  {"params": head, "lr": lr}]
    else:
        groups = [{"params": body + head, "lr": lr}]
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=0.9, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)


def set_train_mode(model, mode: str) -> None:
    """Training mode, except that a frozen body keeps its batch-norm statistics (last-layer-only training)."""
    model.train()
    if mode == "last":
        head = {id(m) for name in _head_names(model) for m in model.net.get_submodule(name).modules()}
        for m in model.net.modules():
            if id(m) not in head:
                m.training = False  # this module only: eval() would recurse into the head


def _head_names(model) -> tuple[str, ...]:
    from ..models.classifiers import head_modules

    return head_modules(model)


def loss_function(model, sset, balance: str, device) -> nn.Module:
    weight = class_weights(sset).to(device) if balance == "weights" else None
    if model.multilabel:
        return nn.BCEWithLogitsLoss(pos_weight=weight)
    return nn.CrossEntropyLoss(weight=weight)


def predict_dataset(model, dataset, device, batch: int = 32) -> Generator[Progress, None, np.ndarray]:
    """Raw outputs (logits) for every sample, in order; yields ``predict`` events."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=0)
    model.eval()
    out, done = [], 0
    with torch.no_grad():
        for images, _ in loader:
            with torch.autocast("cuda", enabled=device.type == "cuda"):
                out.append(model(images.to(device)).float().cpu().numpy())
            done += len(images)
            yield Progress("predict", done, len(dataset))
    return np.concatenate(out) if out else np.zeros((0, len(model.classes)))


def classifier_checkpoint(model, head: str, context: float, with_weights: bool = True, **extra: Any) -> dict[str, Any]:
    from ..inference.classify import FORMAT

    return {"format": FORMAT, "version": 1, "arch": model.arch, "arch_args": model.arch_args,
            "classes": list(model.classes), "head": head, "context": float(context),
            **({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}} if with_weights else {}),
            "initial_weights": model.initial_weights, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra}


def evaluate_scores(sset, scores: np.ndarray, head: str, n_boot: int = 1000) -> dict[str, Any]:
    """The report of raw outputs: probabilities for network heads; an SVM's own one-vs-rest decision values
    (each class's AUC is then that class's SVM, as paper 003 scored it)."""
    from ..classification_metrics import classification_report, multilabel_report
    from ..inference.classify import to_probabilities

    if sset.multilabel:
        return multilabel_report(sset.targets(), to_probabilities(scores, "sigmoid"), sset.classes, n_boot=n_boot)
    values = scores if head == "svm" else to_probabilities(scores, head)
    return classification_report(sset.targets(), values, sset.classes, n_boot=n_boot)


def train_classifier(cfg: ClassifierTrainConfig) -> Generator[Progress, None, dict[str, Any]]:
    """Train through the engine (:mod:`.engine`); returns the best epoch, its validation report and the
    validation scores (for pooling across folds). The best epoch is the one with the lowest validation loss."""
    from ..datasets.classification import CropDataset
    from ..device import as_device
    from ..models.checkpoints import save_checkpoint
    from ..models.classifiers import build_classifier

    from . import distributed

    check_config(cfg)
    distributed.check_batch(cfg.batch)
    out = Path(cfg.out) if cfg.out is not None else None
    if out is not None:
        check_resume(out, cfg.resume)
    elif cfg.resume:
        raise BloodcellInputError("--resume needs the --out of the run to continue")
    torch.manual_seed(cfg.seed)
    device = as_device(cfg.device)
    train_set, val_set = training_samples(cfg)
    if len(train_set) < 2 or val_set is None or not len(val_set):
        raise BloodcellInputError(f"need at least 2 training and 1 validation cell; have {len(train_set)} and "
                                  f"{0 if val_set is None else len(val_set)}")
    weights = "none" if cfg.resume else cfg.weights
    model = build_classifier(cfg.arch, train_set.classes, weights, cfg.multilabel, cfg.input_size).to(device)
    size = model.input_size
    train_data = CropDataset(train_set, size, cfg.context, augment=cfg.augment)
    val_data = CropDataset(val_set, size, cfg.context, augment=False)
    balance = cfg.balance == "sampler" and not train_set.multilabel
    if balance:
        t = train_set.targets()
        sample_w = (1.0 / np.bincount(t, minlength=len(train_set.classes))[t]).tolist()

    def batches(round_: int):
        gen = round_generator(cfg.seed, round_)
        sampler = torch.utils.data.WeightedRandomSampler(sample_w, len(sample_w), replacement=True,
                                                         generator=gen) if balance else None
        return distributed.data_loader(train_data, cfg.batch, shuffle=sampler is None, sampler=sampler,
                                       drop_last=len(train_data) > cfg.batch, generator=gen)

    n_batches = len(batches(0))
    iters = n_batches if cfg.max_iters_per_epoch is None else min(n_batches, cfg.max_iters_per_epoch)
    lr = cfg.lr if cfg.lr is not None else DEFAULT_LR[cfg.optimizer]
    optimizer = make_optimizer(model, cfg, lr)
    criterion = loss_function(model, train_set, cfg.balance, device)
    val_criterion = loss_function(model, train_set, "none", device)
    head = "sigmoid" if cfg.multilabel else "softmax"
    command = cfg.command or " ".join(sys.argv)

    def loss(batch, net=model) -> tuple[torch.Tensor, dict[str, float]]:
        images, targets = batch
        images, targets = images.to(device), targets.to(device)
        out_ = net(images)
        if isinstance(out_, tuple):  # inception_v3's auxiliary classifier (weight 0.4, as its paper)
            return criterion(out_[0].float(), targets) + 0.4 * criterion(out_[1].float(), targets), {}
        return criterion(out_.float(), targets), {}

    def validate(round_: int) -> Generator[Progress, None, dict[str, Any]]:
        scores = yield from predict_dataset(model, val_data, device)
        targets = torch.as_tensor(val_set.targets())
        quick = evaluate_scores(val_set, scores, head, n_boot=0)
        return {"val_loss": float(val_criterion(torch.as_tensor(scores, dtype=torch.float32), targets)),
                "val_accuracy": quick["exact_match"]["value"] if cfg.multilabel else quick["accuracy"]["value"],
                "val_macro_f1": quick.get("macro_f1", math.nan)}

    def describe(metrics: dict[str, Any], epoch: int, with_weights: bool = False, **more: Any) -> dict[str, Any]:
        return classifier_checkpoint(
            model, head, cfg.context, with_weights, mode=cfg.mode, optimizer_name=cfg.optimizer, lr=lr, epoch=epoch,
            val_metrics=metrics, n_train=len(train_set), n_val=len(val_set), data=str(cfg.data), command=command,
            screen_normal=list(cfg.screen_normal or []), target_class=cfg.box_class or "", **more)

    fitted = yield from fit(Fit(
        model=model, optimizer=optimizer, device=device, rounds=cfg.epochs, iters=lambda r: iters, batches=batches,
        loss=loss, validate=validate, describe=describe,
        metric="val_loss", higher_is_better=False, out=out, train_mode=lambda: set_train_mode(model, cfg.mode),
        patience=cfg.patience, seed=cfg.seed, resume=last_path(out) if cfg.resume else None,
        keep_last=cfg.keep_last))
    if not distributed.is_main():  # rank 0 reports, scores and writes
        return {"rank": distributed.rank()}
    model.load_state_dict(fitted.best_weights)
    scores = yield from predict_dataset(model, val_data, device)
    report = evaluate_scores(val_set, scores, head)
    screen = None
    if cfg.multilabel and cfg.screen_normal is not None:
        from .feature_svm import fit_screen_from_scores

        train_scores = yield from predict_dataset(model, CropDataset(train_set, size, cfg.context), device)
        screen, report["screen"] = fit_screen_from_scores(train_set, train_scores, val_set, scores,
                                                          cfg.screen_normal, cfg.seed)
    result_test = None
    if cfg.test_samples is not None:
        result_test = yield from predict_dataset(model, CropDataset(cfg.test_samples, size, cfg.context), device)
    if out is not None:  # the best epoch again, now with its full report's headline and the screen
        ckpt = describe(headline_metrics(report), fitted.best_round, with_weights=True, history=fitted.history,
                        screen=screen.to_state() if screen is not None else None)
        ckpt.update(model=storable(ckpt["model"], True), weights_dtype="float16")
        save_checkpoint(ckpt, out, exist="replace")
    return {"out": str(out) if out else None, "best_epoch": fitted.best_round, "history": fitted.history,
            "report": report, "val_scores": scores, "initial_weights": model.initial_weights, "device": str(device),
            "n_train": len(train_set), "n_val": len(val_set), "val_targets": val_set.targets(),
            "classes": train_set.classes, "seconds": fitted.seconds, "test_scores": result_test}


def headline_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The few numbers a registry entry and a checkpoint keep."""
    if "exact_match" in report:
        out = {"exact_match": report["exact_match"]["value"]}
        out.update({f"auc_{k}": v["auc"]["value"] for k, v in report["per_label"].items()})
        return out
    return {"accuracy": report["accuracy"]["value"], "macro_f1": report["macro_f1"],
            "kappa": report["kappa"]["value"], "macro_auc": report["macro_auc"]}
