"""``bloodcell classify``, ``bloodcell train classifier`` and ``bloodcell evaluate classification``."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from .verbs import (
    FRACTION,
    IOU,
    NON_NEGATIVE,
    POSITIVE,
    _progress,
    add_cluster_arguments,
    add_nproc_argument,
    cluster_spec,
    command_line,
    json_ready,
    kind_group,
    number_in,
    plots_folder,
    refuse_existing_out,
)

# -------------------------------------------------------------------------------------------------- classify


def _whole_images(paths: list[Path]):
    """One box over each whole image (the papers' whole-field setting)."""
    from ..core.inference.classify import whole_image_record
    from ..core.io.images import image_size
    from ..core.io.records import AnnotationSet

    return AnnotationSet(["image"], [whole_image_record(p, *image_size(p)) for p in paths], "images")


def _run_classify(args: argparse.Namespace) -> int:
    from ..core.errors import BloodcellInputError
    from ..core.inference.classify import classify_annotations, load_classifier
    from ..core.io.coco import write_coco
    from ..core.progress import drain

    refuse_existing_out(args.out)
    spec = cluster_spec(args)
    if spec.wanted:
        return _classify_on_cluster(args, spec)
    pred = load_classifier(args.model, args.device, args.batch)
    target = args.target
    if args.boxes is not None:
        from ..core.io.formats import read_annotations

        aset = read_annotations(args.boxes)
    else:
        from ..core.inference.detect import expand_inputs

        if not args.inputs:
            raise BloodcellInputError("give images (or folders), or --boxes with annotations to classify")
        paths = expand_inputs(args.inputs)
        if args.detector:
            from ..core.inference.detect import detect_files, load_predictor

            detector = load_predictor(args.detector, args.device, 4)
            aset = drain(detect_files(detector, paths, args.score, 0.5, None, None), _progress("detect", args.quiet))
        else:
            aset, target = _whole_images(paths), None
    if target is None and (args.boxes is not None or args.detector):
        target = pred.target_class if pred.target_class in aset.classes else None
    result = drain(classify_annotations(pred, aset, target), _progress("classify", args.quiet))
    write_coco(result, args.out, file_names=[str(Path(r.path).resolve()) for r in result.images])
    info = result.extra["info"]
    counts = {k: v for k, v in result.class_counts().items() if v}
    summary = {"out": str(args.out), "images": len(result.images), "cells": info["cells"], "target": target,
               "counts": counts, "ms_per_cell": info["ms_per_cell"], "model": pred.model_id,
               "uncertain": int(sum(a.get("margin", 1.0) < args.margin for r in result.images
                                    for a in r.attribute_list()))}
    if args.json:
        print(json.dumps(json_ready(summary)))
    else:
        print(f"{summary['images']} image(s), {summary['cells']} cell(s) classified"
              f"{' (' + target + ' boxes)' if target else ''}: "
              f"{', '.join(f'{k} {v}' for k, v in counts.items())}; {summary['uncertain']} under margin "
              f"{args.margin}; {info['ms_per_cell']:.1f} ms/cell with {pred.model_id}; wrote {args.out}")
    return 0


def _classify_on_cluster(args: argparse.Namespace, spec) -> int:
    from ..core.errors import BloodcellInputError
    from ..core.inference.classify import load_classifier
    from ..core.io.coco import write_coco
    from ..core.progress import drain
    from ..core.scale.archive import classify_archive
    from ..core.scale.parts import remove_parts

    pred = load_classifier(args.model, "cpu", 1)  # a bad checkpoint is one line now, not one per image from workers
    boxes, paths = None, []
    if args.boxes is not None:
        from ..core.io.formats import read_annotations

        boxes = read_annotations(args.boxes)
        if args.target is not None and args.target not in boxes.classes:
            raise BloodcellInputError(f"class {args.target!r} is not in the boxes' classes {boxes.classes}; use "
                                      "--target with one of them, or leave it out to classify every box")
    else:
        from ..core.inference.detect import expand_inputs

        if not args.inputs:
            raise BloodcellInputError("give images (or folders), or --boxes with annotations to classify")
        paths = expand_inputs(args.inputs)
    target = args.target
    if target is None and boxes is not None:  # the class the classifier was trained to type, as without a cluster
        target = pred.target_class if pred.target_class in boxes.classes else None
    detector = None if boxes is not None else args.detector
    result = drain(classify_archive(str(args.model), paths, args.out, spec, boxes, target, detector,
                                    args.score, args.device, args.batch), _progress("classify", args.quiet))
    write_coco(result, args.out, file_names=[str(Path(r.path).resolve()) for r in result.images])
    remove_parts(args.out)
    info = result.extra["info"]
    counts = {k: v for k, v in result.class_counts().items() if v}
    summary = {"out": str(args.out), "images": len(result.images), "cells": info["cells"],
               "target": info["target_class"], "counts": counts, "ms_per_cell": info["ms_per_cell"],
               "model": info["classifier"], "cluster": info["cluster"]}
    if args.json:
        print(json.dumps(json_ready(summary)))
    else:
        print(f"{summary['images']} image(s), {summary['cells']} cell(s) classified on {info['cluster']}: "
              f"{', '.join(f'{k} {v}' for k, v in counts.items())}; wrote {args.out}")
    return 0


def register_classify(sub) -> None:
    p = sub.add_parser("classify", help="name each cell (box) with a classifier; COCO in, COCO out")
    p.add_argument("inputs", nargs="*", type=Path, help="images or folders (with --detector, or whole images)")
    p.add_argument("--model", required=True, type=Path, help="classifier checkpoint (.pt)")
    p.add_argument("--boxes", type=Path, help="annotations or detections whose boxes to classify (COCO/VOC/YOLO)")
    p.add_argument("--detector", help="detect first with this model ('classical' or a checkpoint): one step")
    p.add_argument("--target", help="classify only boxes of this class, e.g. WBC (default: the class the "
                   "classifier was trained on, else every box)")
    p.add_argument("--out", required=True, type=Path, help="COCO JSON to create")
    p.add_argument("--score", type=FRACTION, default=0.3, help="detector score threshold (with --detector)")
    p.add_argument("--margin", type=FRACTION, default=0.3, help="report cells whose margin is below this")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    add_cluster_arguments(p)
    p.set_defaults(run=_run_classify)


# ---------------------------------------------------------------------------------------------------- train


def _train_config(args: argparse.Namespace):
    from ..core.training.classification import ClassifierTrainConfig

    return ClassifierTrainConfig(
        arch=args.arch, data=args.data, out=args.out, val=args.val, val_fraction=args.val_fraction,
        images=[str(p) for p in args.images or []], boxes=args.boxes, box_class=args.box_class,
        classes=args.classes.split(",") if args.classes else None, drop_classes=args.drop_class or [],
        min_count=args.min_count, multilabel=args.multilabel, mode=args.mode, optimizer=args.optimizer, lr=args.lr,
        weight_decay=args.weight_decay, epochs=args.epochs, batch=args.batch, patience=args.patience,
        balance=args.balance, augment=not args.no_augment, context=args.context, input_size=args.input_size,
        weights=args.weights, device=args.device, seed=args.seed, max_iters_per_epoch=args.max_iters,
        resume=getattr(args, "resume", False), keep_last=getattr(args, "keep_last", False),
        feature_layer=args.layer, svm_c=args.svm_c,
        screen_normal=args.screen_normal.split(",") if args.screen_normal else None, command=command_line(),
    )


def _reporter(args: argparse.Namespace):
    from .progress_report import reporter

    return reporter("train", args.quiet, args.log_every)


def _write_report(folder: Path, report: dict, y: np.ndarray, scores: np.ndarray, head: str, extra: dict) -> None:
    from ..core.atomic import atomic_write_text
    from ..core.inference.classify import to_probabilities
    from ..core.plots import plot_confusion_normalised, plot_roc

    plots_folder(folder)
    atomic_write_text(folder / "report.json", json.dumps(json_ready({**extra, "report": report}), indent=1,
                                                         allow_nan=False) + "\n")
    names = report.get("classes") or report.get("labels")
    if "confusion" in report:
        plot_confusion_normalised(report, folder)
    plot_roc(y, to_probabilities(scores, head) if head != "svm" else scores, names, folder,
             multilabel="exact_match" in report)


def _run_train_classifier(args: argparse.Namespace) -> int:
    from ..core.classification_metrics import summary_line
    from ..core.errors import BloodcellInputError
    from ..core.progress import drain
    from ..core.training.crossval import cross_validate
    from ..core.training.feature_svm import fit_feature_svm
    from ..core.training.launch import train

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = _train_config(args)
    if args.nproc != 1 and (args.folds or args.svm):
        raise BloodcellInputError("--nproc trains one network across processes; --folds and --svm run in one")
    if args.folds:
        result = drain(cross_validate(cfg, args.folds, svm=args.svm), _reporter(args))
        extra = {k: result[k] for k in ("folds", "classes", "counts", "skipped", "head", "seconds", "n",
                                        "initial_weights")}
        extra["recipe"] = {"arch": args.arch, "mode": "features+svm" if args.svm else args.mode,
                           "optimizer": args.optimizer, "epochs": args.epochs, "input_size": args.input_size,
                           "command": cfg.command}
        if args.report:
            _write_report(args.report, result["report"], result["targets"], result["scores"], result["head"], extra)
        line = {"folds": args.folds, **{k: v for k, v in extra.items() if k in ("n", "seconds", "counts")},
                "summary": summary_line(result["report"])}
        print(json.dumps(json_ready(line)) if args.json else line["summary"])
        return 0
    if args.out is None:
        raise BloodcellInputError("--out is required (or --folds K to cross-validate without saving a model)")
    result = drain(fit_feature_svm(cfg) if args.svm else train("classifier", cfg, args.nproc), _reporter(args))
    if result is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    for note in result.get("skipped", []) or []:
        print(f"note: {note}", file=sys.stderr)
    if args.report:
        _write_report(args.report, result["report"], np.asarray(result["val_targets"]), result["val_scores"],
                      "svm" if args.svm else ("sigmoid" if args.multilabel else "softmax"),
                      {"out": result["out"], "n_train": result["n_train"], "n_val": result["n_val"]})
    summary = {"out": result["out"], "best_epoch": result.get("best_epoch"), "n_train": result["n_train"],
               "n_val": result["n_val"], "initial_weights": result["initial_weights"], "device": result["device"],
               "seconds": result["seconds"], "summary": summary_line(result["report"])}
    print(json.dumps(json_ready(summary)) if args.json else f"{summary['summary']}; wrote {result['out']}")
    return 0


def register_train_classifier(sub) -> None:
    from ..core.choices import CLASSIFIER_ARCHS, CLASSIFIER_BALANCE, CLASSIFIER_MODES, CLASSIFIER_OPTIMIZERS

    kinds = kind_group(sub, "train", "train a model (detector, classifier)")
    c = kinds.add_parser("classifier", help="train a cell classifier (fine-tune, features + SVM, multi-label)")
    c.add_argument("--data", required=True, type=Path,
                   help="crop folder (export's crops/), annotations (COCO/VOC/YOLO/dataset), or a label CSV")
    c.add_argument("--val", type=Path, help="separate validation data (default: a stable split by image)")
    c.add_argument("--val-fraction", type=number_in(0.0, 1.0, True, True), default=0.2)
    c.add_argument("--images", type=Path, action="append", help="folder of a label CSV's images (repeatable)")
    c.add_argument("--boxes", type=Path, help="annotations holding the cells of a label CSV's images")
    c.add_argument("--box-class", help="which boxes of --boxes are the cells (e.g. WBC)")
    c.add_argument("--classes", help="comma-separated classes to learn (default: all)")
    c.add_argument("--drop-class", action="append", help="leave a class out (repeatable), e.g. BASOPHIL")
    c.add_argument("--min-count", type=int, default=0, help="leave out classes with fewer cells than this")
    c.add_argument("--multilabel", action="store_true", help="one sigmoid output per label (paper 001)")
    c.add_argument("--screen-normal", help="multi-label: comma-separated normal labels; fits the abnormal screen")
    c.add_argument("--arch", default="resnet50", choices=sorted(CLASSIFIER_ARCHS), metavar="ARCH",
                   help="one of " + ", ".join(CLASSIFIER_ARCHS))
    c.add_argument("--mode", default="all", choices=CLASSIFIER_MODES, help="layers trained (default all)")
    c.add_argument("--svm", action="store_true", help="frozen features + linear one-vs-rest SVM (paper 003)")
    c.add_argument("--layer", help="SVM feature layer (default fc7 for vgg16, else pool)")
    c.add_argument("--svm-c", type=POSITIVE, default=1.0)
    c.add_argument("--optimizer", default="rmsprop", choices=CLASSIFIER_OPTIMIZERS)
    c.add_argument("--lr", type=POSITIVE, help="learning rate (default 1e-4 rmsprop/adam, 1e-3 sgd)")
    c.add_argument("--weight-decay", type=NON_NEGATIVE, default=1e-4)
    c.add_argument("--epochs", type=int, default=30)
    c.add_argument("--batch", type=int, default=16)
    c.add_argument("--patience", type=int, default=10, help="early stopping on validation loss (epochs)")
    c.add_argument("--balance", default="weights", choices=CLASSIFIER_BALANCE, help="class-weighted loss, sampler, none")
    c.add_argument("--no-augment", action="store_true")
    c.add_argument("--context", type=number_in(0.0, 10.0), default=0.15, help="context around each box (fraction of its side)")
    c.add_argument("--input-size", type=int, help="crop side in pixels (default: the architecture's)")
    c.add_argument("--weights", default="none", help="none, imagenet, auto or a weights/checkpoint file")
    c.add_argument("--device", default="auto")
    c.add_argument("--threads", type=int, help="CPU threads for torch")
    c.add_argument("--seed", type=int, default=0)
    add_nproc_argument(c)
    c.add_argument("--resume", action="store_true", help="continue the run whose OUT.last.pt is there (left by Cancel, a crash or --keep-last)")
    c.add_argument("--keep-last", action="store_true", help="keep OUT.last.pt (optimiser state, for resuming "
                   "or continuing later) after the run completes; by default only the slim best checkpoint stays")
    c.add_argument("--max-iters", type=int, help="cap iterations per epoch (quick runs)")
    c.add_argument("--folds", type=int, help="k-fold cross-validation (grouped by image) instead of one model")
    c.add_argument("--report", type=Path, help="folder for report.json, confusion matrix and ROC PNGs")
    c.add_argument("--out", type=Path, help="checkpoint to create (.pt)")
    c.add_argument("--log-every", type=int, default=10)
    c.add_argument("--json", action="store_true")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(run=_run_train_classifier)


# ------------------------------------------------------------------------------------------------- evaluate


def _run_evaluate_classification(args: argparse.Namespace) -> int:
    from ..core.classification_metrics import (
        classification_report,
        paired_cells,
        summary_line,
    )
    from ..core.errors import BloodcellInputError

    if args.model is not None:
        from ..core.datasets.classification import load_samples
        from ..core.inference.classify import load_classifier, predict_samples
        from ..core.progress import drain
        from ..core.training.classification import evaluate_scores, reindex_classes

        if args.data is None:
            raise BloodcellInputError("--model needs --data (cells with their true classes)")
        pred = load_classifier(args.model, args.device)
        sset = load_samples(args.data, args.images, args.boxes, args.box_class, classes=pred.classes,
                            multilabel=pred.multilabel)
        sset = reindex_classes(sset.without(args.drop_class or []), pred.classes)
        scores = drain(predict_samples(pred, sset))
        report = evaluate_scores(sset, scores, pred.head)
        y, head, extra = sset.targets(), pred.head, {"model": pred.model_id, "skipped": sset.skipped}
    else:
        from ..core.io.formats import read_annotations

        if args.pred is None or args.gt is None:
            raise BloodcellInputError("give --pred and --gt (COCO predictions of bloodcell classify and the truth), "
                                      "or --model and --data")
        cells = paired_cells(read_annotations(args.gt), read_annotations(args.pred, "coco"), args.iou)
        report = classification_report(cells["y"], cells["scores"], cells["classes"])
        y, scores, head = cells["y"], cells["scores"], "softmax"
        extra = {"missed": cells["missed"], "images": cells["images"]}
        scores = np.log(np.clip(scores, 1e-12, None))  # probabilities in; the ROC needs only their order
    if args.plots:
        _write_report(args.plots, report, y, scores, head, extra)
    if args.json:
        print(json.dumps(json_ready({**extra, **report})))
        return 0
    print(summary_line(report))
    if "per_class" in report:
        print(f"  {'class':<14}{'n':>5} {'precision':>10} {'recall':>8} {'specif.':>8} {'F1':>6} {'AUC':>6}")
        for name, v in report["per_class"].items():
            print(f"  {name:<14}{v['support']:>5} {v['precision']['value']:>10.3f} {v['recall']['value']:>8.3f} "
                  f"{v['specificity']['value']:>8.3f} {v['f1']['value']:>6.3f} "
                  f"{v['auc']['value'] if not math.isnan(v['auc']['value']) else float('nan'):>6.3f}")
    if extra.get("missed"):
        print(f"note: {extra['missed']} ground-truth cell(s) had no classified box over them", file=sys.stderr)
    return 0


def register_evaluate_classification(sub) -> None:
    kinds = kind_group(sub, "evaluate", "score predictions against ground truth (detection, classification)")
    c = kinds.add_parser("classification", help="accuracy, per-class precision/recall/specificity/F1/AUC, kappa")
    c.add_argument("--pred", type=Path, help="COCO written by bloodcell classify")
    c.add_argument("--gt", type=Path, help="ground truth annotations (VOC, COCO, YOLO, dataset)")
    c.add_argument("--iou", type=IOU, default=0.5, help="IoU pairing a predicted box with a true one")
    c.add_argument("--model", type=Path, help="or: a classifier checkpoint to run on --data")
    c.add_argument("--data", type=Path, help="cells with true classes (crop folder, annotations, label CSV)")
    c.add_argument("--images", type=Path, action="append")
    c.add_argument("--boxes", type=Path)
    c.add_argument("--box-class")
    c.add_argument("--drop-class", action="append")
    c.add_argument("--device", default="auto")
    c.add_argument("--json", action="store_true", help="print exactly one JSON object")
    c.add_argument("--plots", type=Path, help="folder for the row-normalised confusion matrix and ROC curves")
    c.set_defaults(run=_run_evaluate_classification)


REGISTRY = (register_classify, register_train_classifier, register_evaluate_classification)
