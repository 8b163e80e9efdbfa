"""``bloodcell export``, ``bloodcell retrain``, ``bloodcell models`` and ``bloodcell differential``: the review
loop's batch side, calling the same core functions as the Review widget."""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from pathlib import Path

from ..core.tasks import TASKS
from .verbs import POSITIVE, _progress, command_line, json_ready, number_in


def _reviewer(name: str | None) -> str:
    import getpass

    return name or getpass.getuser()


# ---------------------------------------------------------------------------------------------------- export


def _run_export(args: argparse.Namespace) -> int:
    from ..core.errors import BloodcellInputError
    from ..core.export import export_dataset, items_from_project
    from ..core.progress import drain

    if bool(args.projects) == bool(args.volume):
        raise BloodcellInputError("give review project folder(s), or --volume IMAGE LABELMAP pairs (not both)")
    if args.volume:
        from ..core.export_volumes import export_segmentation, item_from_files

        items = [item_from_files(image, labels) for image, labels in args.volume]
        res = drain(export_segmentation(items, args.dataset, by=_reviewer(args.by), note=args.note),
                    _progress("export", args.quiet))
        print(f"segmentation dataset {res.dataset} version {res.version}: {res.cases} case(s); added "
              f"{len(res.added)}, replaced {len(res.replaced)}")
        return 0
    items = [item for project in args.projects for item in items_from_project(project, args.image or None)]
    result = drain(export_dataset(items, args.dataset, by=_reviewer(args.by), views=args.view or (),
                                  crops=not args.no_crops, crop_margin=args.crop_margin,
                                  include_unreviewed=args.include_unreviewed, note=args.note),
                   _progress("export", args.quiet))
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"dataset {result.dataset} version {result.version}: {result.images} image(s), {result.boxes} box(es), "
          f"{result.crops} crop(s); added {len(result.added)}, replaced {len(result.replaced)}")
    return 0


def register_export(sub) -> None:
    from ..core.crops import CROP_CONTEXT

    p = sub.add_parser("export", help="add reviewed images (or corrected label maps) to a versioned training set")
    p.add_argument("projects", nargs="*", type=Path, help="review project folder(s)")
    p.add_argument("--volume", nargs=2, action="append", type=Path, metavar=("IMAGE", "LABELMAP"),
                   help="a NIfTI image and its corrected label map, into a segmentation dataset (repeatable)")
    p.add_argument("--dataset", required=True, type=Path, help="dataset folder (created if new)")
    p.add_argument("--image", action="append", help="only this reviewed image key (repeatable)")
    p.add_argument("--view", action="append", choices=("voc", "yolo"), help="also write a VOC or YOLO view")
    p.add_argument("--no-crops", action="store_true", help="skip the per-class cell crops")
    p.add_argument("--crop-margin", type=number_in(0.0, 10.0), default=CROP_CONTEXT,
                   help="context on each side of a cell's square crop, as a fraction of the box's longer side "
                   f"(default {CROP_CONTEXT:g}, the context classification uses)")
    p.add_argument("--include-unreviewed", action="store_true",
                   help="also export unreviewed model boxes (kept marked review=unreviewed)")
    p.add_argument("--by", help="who exports (default: the login name)")
    p.add_argument("--note", default="")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_run_export)


# --------------------------------------------------------------------------------------------------- retrain


def _stop_on_sigterm():
    """SIGTERM (the widget's Cancel, or a scheduler) stops training like Ctrl+C: nothing is registered.
    Returns the previous handler, to put back afterwards."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _run_retrain(args: argparse.Namespace) -> int:
    if args.task == "classifier":
        from ..core.models.classifiers import ARCHITECTURES
    elif args.task == "segmenter":
        ARCHITECTURES = {"highres3dnet": None}
        args.arch = args.arch or "highres3dnet"
    else:
        from ..core.models.detectors import ARCHITECTURES

    if args.arch is None:
        from ..core.training.retrain import DEFAULT_ARCH
        from ..core.training.retrain_classifier import DEFAULT_CLASSIFIER

        args.arch = DEFAULT_CLASSIFIER if args.task == "classifier" else DEFAULT_ARCH
    if args.arch not in ARCHITECTURES and not (args.task == "detector" and args.arch == "auto"):
        from ..core.errors import BloodcellInputError, nearest

        raise BloodcellInputError(f"unknown architecture {args.arch!r}{nearest(args.arch, list(ARCHITECTURES))}")
    previous = _stop_on_sigterm()
    try:
        return _retrain(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _retrain(args: argparse.Namespace) -> int:
    import torch

    from ..core.progress import drain
    from ..core.tasks import task
    from ..core.training.retrain import RetrainConfig, retrain
    from .progress_report import reporter

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = RetrainConfig(
        dataset=args.dataset, registry=args.registry, dataset_version=args.dataset_version, arch=args.arch,
        weights=args.weights, epochs=args.epochs, batch=args.batch, lr=args.lr, device=args.device,
        max_iters_per_epoch=args.max_iters, activate=args.activate, by=_reviewer(args.by), command=command_line(),
        task=args.task, classes=args.classes.split(",") if args.classes else None, patch=args.patch,
        freeze=[f for f in (args.freeze or "").split(",") if f],
    )
    result = drain(retrain(cfg), reporter("retrain", args.quiet, jsonl=args.jsonl))
    key = task(args.task).headline
    summary = {"task": args.task, "version": result.version["id"], "activated": result.activated,
               "parent": result.parent, key: result.metrics.get(key),
               f"parent_{key}": (result.parent_metrics or {}).get(key), "reason": result.reason}
    print(json.dumps(json_ready({"result": summary} if args.jsonl else summary)), flush=True)
    return 0


def register_retrain(sub) -> None:
    from ..core.training.retrain import DEFAULT_ARCH

    p = sub.add_parser("retrain", help="fine-tune the active detector, classifier or segmenter on a dataset and register "
                       "the new version")
    p.add_argument("--task", default="detector", choices=tuple(TASKS))
    p.add_argument("--patch", type=int, help="segmenter: training window of a first segmenter (default 48)")
    p.add_argument("--freeze", help="segmenter: stages to freeze while fine-tuning, e.g. conv_0,res_1")
    p.add_argument("--classes", help="classifier: comma-separated classes of a first classifier (default: every "
                   "class with at least 5 reviewed cells)")
    p.add_argument("--dataset", required=True, type=Path, help="dataset folder written by 'bloodcell export'")
    p.add_argument("--dataset-version", type=int, help="dataset version (default: current)")
    p.add_argument("--registry", type=Path, help="model registry folder (default: $BLOODCELL_HOME/registry)")
    p.add_argument("--arch", help=f"architecture when no model of the task is active yet (default {DEFAULT_ARCH}: "
                   "fine-tune the bundled starter detector; resnet50 for classifiers)")
    p.add_argument("--weights", default="none", help="initial weights of a first model (none, imagenet, coco, file)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, help="default 2 (detector) or 16 (classifier)")
    p.add_argument("--lr", type=POSITIVE, default=1e-4, help="AdamW learning rate (default 1e-4, for fine-tuning)")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-iters", type=int, help="cap iterations per epoch (quick runs); segmenter: iterations per "
                   "validation round (default 100)")
    p.add_argument("--activate", default="if-better", choices=("if-better", "always", "never"))
    p.add_argument("--threads", type=int, help="CPU threads for torch (leave one for the viewer)")
    p.add_argument("--by", help="who asked for the run (default: the login name)")
    p.add_argument("--jsonl", action="store_true", help="print progress as JSON lines on stdout (for the widget)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_run_retrain)


# ---------------------------------------------------------------------------------------------------- models


def _fmt(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _run_models(args: argparse.Namespace) -> int:
    from ..core.models.registry import ModelRegistry, checkpoint_metrics
    from ..core.tasks import task

    reg = ModelRegistry(args.registry)
    if args.action == "list":
        data = reg.load()
        listing = reg.listing()
        if args.json:
            print(json.dumps(json_ready({**data, "listing": listing}), indent=1, allow_nan=False))
            return 0
        if not data["versions"]:
            print(f"no models registered in {reg.folder}")
        for v in listing:
            active = "*" if data["active"].get(v["task"]) == v["id"] else " "
            if v.get("bundled"):
                active = "*" if v["task"] not in data["active"] else " "
                print(f"{active} {v['id']}  {v['task']:<10} {v.get('arch', ''):<28} bundled {v['name']} "
                      f"(shipped with the package; model card {v['card']})")
                continue
            key = task(v["task"]).headline
            print(f"{active} {v['id']}  {v['task']:<10} {v.get('arch', ''):<28} {key} {_fmt(v['metrics'].get(key))}"
                  f"  parent {v['parent'] or '-':<6} dataset v{v['dataset_version'] or '-'}  {v['created']}")
        return 0
    if args.action == "add":
        from ..core.models.checkpoints import load_checkpoint

        ckpt = load_checkpoint(args.target, expect=task(args.task).format)
        entry = reg.add(args.target, args.task, metrics=checkpoint_metrics(ckpt), command=command_line(),
                        by=_reviewer(args.by), activate=args.activate, reason="imported",
                        extra={"arch": ckpt["arch"], "classes": list(ckpt["classes"])})
    elif args.action == "activate":
        entry = reg.activate(args.target, by=_reviewer(args.by), task=args.task)
    else:
        entry = reg.rollback(args.task, by=_reviewer(args.by))
    active = reg.active_or_bundled(entry["task"])
    print(f"{entry['id']} registered; active {entry['task']}: {active['id'] if active else 'none'}"
          + (" (bundled)" if active and active.get("bundled") else ""))
    return 0


def register_models(sub) -> None:
    p = sub.add_parser("models", help="list, add, activate or roll back model versions in the registry")
    p.add_argument("action", choices=("list", "add", "activate", "rollback"))
    p.add_argument("target", nargs="?", help="checkpoint file (add) or version id (activate)")
    p.add_argument("--registry", type=Path, help="registry folder (default: $BLOODCELL_HOME/registry)")
    p.add_argument("--task", default="detector", choices=tuple(TASKS))
    p.add_argument("--activate", action="store_true", help="with add: make it the active model")
    p.add_argument("--by", help="who (default: the login name)")
    p.add_argument("--json", action="store_true")

    def run(args):
        from ..core.errors import BloodcellInputError

        if args.action in ("add", "activate") and not args.target:
            raise BloodcellInputError(f"'models {args.action}' needs a "
                                      f"{'checkpoint file' if args.action == 'add' else 'version id'}")
        return _run_models(args)

    p.set_defaults(run=run)


# ----------------------------------------------------------------------------------------------- differential


def _run_differential(args: argparse.Namespace) -> int:
    from ..core.case_stats import pool
    from ..core.differential import (
        differential,
        differential_csv,
        white_cell_classes,
        write_differential_csv,
    )
    from ..core.review_project import ReviewProject

    project = ReviewProject(args.project, create=False)
    loaded = [(k, t) for k, t, _ in project.load_all() if not args.image or k in args.image]
    if not loaded:
        from ..core.errors import BloodcellInputError

        raise BloodcellInputError("holds no reviewed images (or none with the given keys)", args.project)
    p = pool([t for _, t in loaded])
    diff = differential(p.classes, p.labels, p.reviews,
                        count_classes=args.classes or white_cell_classes(p.classes, p.attributes))
    if args.out:
        write_differential_csv(diff, args.out)
    if args.json:
        print(json.dumps(json_ready(diff.as_dict()), indent=1, allow_nan=False))
    else:
        print(differential_csv(diff), end="")
    return 0


def register_differential(sub) -> None:
    p = sub.add_parser("differential", help="the differential count of a review project, with exact 95%% intervals")
    p.add_argument("project", type=Path)
    p.add_argument("--image", action="append", help="only this reviewed image key (repeatable)")
    p.add_argument("--classes", nargs="+", help="count only these classes (e.g. the white-cell types)")
    p.add_argument("--out", type=Path, help="CSV file to create")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_run_differential)


# ---------------------------------------------------------------------------------------------------- review


def _run_review(args: argparse.Namespace) -> int:
    from ..core.review_project import ReviewProject, import_predictions

    if args.action == "import":
        from ..core.io.formats import read_annotations

        if not args.predictions:
            from ..core.errors import BloodcellInputError

            raise BloodcellInputError("'review import' needs the predictions file (COCO from 'bloodcell detect')")
        keys = import_predictions(ReviewProject(args.project), read_annotations(args.predictions),
                                  review_default="accepted" if args.as_ground_truth else "unreviewed")
        print(f"{len(keys)} image(s) ready for review in {args.project}")
        return 0
    project = ReviewProject(args.project, create=False)
    rows = []
    for key, table, _ in project.load_all():
        review = table.col("review")
        rows.append({"image": key, "cells": len(table), "unreviewed": int((review == "unreviewed").sum()),
                     "uncertain_left": len(table.blocking_signoff()),
                     "signed_by": table.signed["by"] if table.signature_valid else None})
    if args.json:
        print(json.dumps(json_ready(rows), indent=1, allow_nan=False))
    for r in [] if args.json else rows:
        print(f"{r['image']}: {r['cells']} cells, {r['unreviewed']} unreviewed ({r['uncertain_left']} uncertain), "
              f"{'signed by ' + r['signed_by'] if r['signed_by'] else 'not signed'}")
    return 0


def register_review(sub) -> None:
    p = sub.add_parser("review", help="start a review project from detections, or show where its review stands")
    p.add_argument("action", choices=("import", "status"))
    p.add_argument("predictions", nargs="?", type=Path, help="with import: COCO predictions from 'bloodcell detect'")
    p.add_argument("--project", required=True, type=Path, help="review project folder")
    p.add_argument("--as-ground-truth", action="store_true",
                   help="with import: boxes without a review state were drawn by people (mark them accepted)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_run_review)


REGISTRY = (register_review, register_export, register_retrain, register_models, register_differential)
