"""``bloodcell detect``, ``bloodcell train detector`` and ``bloodcell evaluate detection``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .verbs import (
    FRACTION,
    IOU,
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


def _arch_args(pairs: list[str]) -> dict[str, str]:
    from ..core.errors import BloodcellInputError

    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise BloodcellInputError(f"--arch-arg takes KEY=VALUE (e.g. s_min=0.2); got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


# --------------------------------------------------------------------------------------------------- detect


def _run_detect(args: argparse.Namespace) -> int:
    from ..core.inference.detect import detect_files, expand_inputs, load_predictor
    from ..core.io.coco import write_coco
    from ..core.progress import drain

    paths = expand_inputs(args.inputs)
    refuse_existing_out(args.out)
    spec = cluster_spec(args)
    if spec.wanted:
        return _detect_on_cluster(args, paths, spec)
    predictor = load_predictor(args.model, args.device, args.batch)
    if not args.quiet:
        print(f"detecting with {predictor.label}", file=sys.stderr)
    aset = drain(detect_files(predictor, paths, args.score, args.nms, args.tile, args.overlap),
                 _progress("detect", args.quiet))
    names = [str(r.path.resolve()) for r in aset.images]
    write_coco(aset, args.out, file_names=names)
    counts = aset.class_counts()
    print(f"{len(aset.images)} image(s), {aset.n_boxes} box(es) "
          f"({', '.join(f'{k} {v}' for k, v in counts.items())}), "
          f"{aset.extra['info']['ms_per_image']:.0f} ms/image with {predictor.model_id}; wrote {args.out}")
    return 0


def _detect_on_cluster(args: argparse.Namespace, paths: list[Path], spec) -> int:
    from ..core.io.coco import write_coco
    from ..core.progress import drain
    from ..core.scale.archive import detect_archive
    from ..core.scale.parts import remove_parts

    aset = drain(detect_archive(args.model, paths, args.out, spec, args.score, args.nms, args.tile, args.overlap,
                                args.device, args.batch), _progress("detect", args.quiet))
    write_coco(aset, args.out, file_names=[str(r.path.resolve()) for r in aset.images])
    remove_parts(args.out)
    counts = aset.class_counts()
    info = aset.extra["info"]
    print(f"{len(aset.images)} image(s), {aset.n_boxes} box(es) "
          f"({', '.join(f'{k} {v}' for k, v in counts.items())}), {info['ms_per_image'] or 0:.0f} ms/image on "
          f"{info['cluster']} with {info['model']}; wrote {args.out}")
    return 0


def register_detect(sub) -> None:
    p = sub.add_parser("detect", help="box and name every cell in images; write COCO JSON with scores")
    p.add_argument("inputs", nargs="+", type=Path, help="image files or folders of images")
    p.add_argument("--model", default="auto",
                   help="'auto' (default: the registry's active detector, else the bundled starter model, else "
                        "classical), 'bundled', 'classical' or a checkpoint .pt")
    p.add_argument("--out", required=True, type=Path, help="predictions COCO JSON to create")
    p.add_argument("--score", type=FRACTION, default=0.3, help="keep boxes scoring at least this (default 0.3)")
    p.add_argument("--nms", type=IOU, default=0.5, help="class-aware NMS IoU (default 0.5)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    p.add_argument("--batch", type=int, default=4, help="tiles per forward pass")
    p.add_argument("--tile", type=int, default=None,
                   help="tile side in pixels (default: tile fields over 1.5x the model's training size; 0: never)")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap in pixels (default tile/4)")
    p.add_argument("--quiet", action="store_true")
    add_cluster_arguments(p)
    p.set_defaults(run=_run_detect)


# ---------------------------------------------------------------------------------------------------- train


def _run_train_detector(args: argparse.Namespace) -> int:
    from ..core.progress import drain
    from ..core.training.detection import DetectorTrainConfig
    from ..core.training.launch import train

    cfg = DetectorTrainConfig(
        arch=args.arch, data=args.data, out=args.out, val=args.val, val_fraction=args.val_fraction,
        epochs=args.epochs, batch=args.batch, lr=args.lr, optimizer=args.optimizer, weights=args.weights,
        device=args.device, arch_args=_arch_args(args.arch_arg), resume=args.resume, keep_last=args.keep_last, balance=not args.no_balance,
        max_iters_per_epoch=args.max_iters, seed=args.seed,
        command=command_line(),
    )

    from .progress_report import reporter

    result = drain(train("detector", cfg, args.nproc), reporter("train", args.quiet, args.log_every))
    if result is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    best = result["best"]
    print(json.dumps(json_ready({"out": result["out"], "best_epoch": best.get("epoch"), "mAP50": best.get("mAP50"),
                                 "mAP": best.get("mAP"), "initial_weights": result["initial_weights"],
                                 "device": result["device"], "n_train": result["n_train"], "n_val": result["n_val"]}),
                     allow_nan=False))
    return 0


def register_train(sub) -> None:
    from ..core.choices import DETECTOR_ARCHS

    kinds = kind_group(sub, "train", "train a model (detector, classifier)")
    d = kinds.add_parser("detector", help="train a cell detector on VOC, COCO or YOLO data")
    d.add_argument("--data", required=True, type=Path, help="VOC folder, COCO JSON or YOLO folder")
    d.add_argument("--val", type=Path, help="separate validation dataset (default: a stable split of --data)")
    d.add_argument("--val-fraction", type=number_in(0.0, 1.0, True, True), default=0.2)
    d.add_argument("--arch", required=True, choices=sorted(DETECTOR_ARCHS), metavar="ARCH",
                   help="one of " + ", ".join(DETECTOR_ARCHS))
    d.add_argument("--arch-arg", action="append", metavar="KEY=VALUE",
                   help="architecture argument, e.g. s_min=0.2, input_size=320, min_size=480")
    d.add_argument("--epochs", type=int, default=12)
    d.add_argument("--out", required=True, type=Path, help="best checkpoint to create (.pt)")
    d.add_argument("--weights", default="none", help="auto, none, imagenet, coco or a weights file (default none)")
    d.add_argument("--device", default="auto")
    d.add_argument("--batch", type=int, default=4)
    d.add_argument("--lr", type=POSITIVE, help="base learning rate (default 0.01 for sgd, 1e-4 for adamw)")
    d.add_argument("--optimizer", default="sgd", choices=("sgd", "adamw"))
    d.add_argument("--resume", action="store_true", help="continue the run whose OUT.last.pt is there (left by Cancel, a crash or --keep-last)")
    d.add_argument("--keep-last", action="store_true", help="keep OUT.last.pt (optimiser state, for resuming "
                   "or continuing later) after the run completes; by default only the slim best checkpoint stays")
    d.add_argument("--no-balance", action="store_true", help="sample images uniformly instead of repeat-factor")
    d.add_argument("--max-iters", type=int, help="cap iterations per epoch (quick runs)")
    d.add_argument("--seed", type=int, default=0)
    add_nproc_argument(d)
    d.add_argument("--log-every", type=int, default=10)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(run=_run_train_detector)


# ------------------------------------------------------------------------------------------------- evaluate


def _run_evaluate_detection(args: argparse.Namespace) -> int:
    from ..core.io.formats import read_annotations
    from ..core.metrics import confusion_matrix, detection_report

    gt = read_annotations(args.gt)
    pred = read_annotations(args.pred, "coco")
    report = detection_report(gt, pred, iou=args.iou)
    ms = (pred.extra.get("info") or {}).get("ms_per_image")
    if args.plots:
        from ..core.plots import plot_confusion, plot_pr_curves

        plots_folder(args.plots)
        written = plot_pr_curves(report, args.plots)
        written.append(plot_confusion(confusion_matrix(gt, pred, iou=args.iou, score=args.score), args.plots))
        if not args.json:
            print(f"plots: {', '.join(str(w) for w in written)}")
    per_class = {k: {"AP50": v["AP50"], "n_gt": v["n_gt"], "n_pred": v["n_pred"]}
                 for k, v in report["per_class"].items()}
    if args.json:
        print(json.dumps(json_ready({"mAP50": report["mAP50"], "mAP": report["mAP"], "per_class": per_class}),
                         allow_nan=False))
        return 0
    print(f"{report['images']} image(s); IoU {args.iou}")
    for name, v in per_class.items():
        print(f"  {name:<16} AP50 {v['AP50']:.4f}   ground truth {v['n_gt']:>6}   predicted {v['n_pred']:>6}")
    print(f"mAP@{args.iou:g} (VOC all-point) {report['mAP50']:.4f}")
    print(f"COCO mAP@[.5:.95] {report['mAP']:.4f}")
    if ms is not None:
        print(f"{ms:.1f} ms/image (as recorded by bloodcell detect)")
    if report["images_without_predictions"]:
        print(f"note: {len(report['images_without_predictions'])} ground-truth image(s) not in the predictions "
              "were left out", file=sys.stderr)
    if report["classes_not_in_ground_truth"]:
        print(f"note: predicted classes not in the ground truth: {report['classes_not_in_ground_truth']}",
              file=sys.stderr)
    return 0


def register_evaluate(sub) -> None:
    kinds = kind_group(sub, "evaluate", "score predictions against ground truth (detection, classification)")
    d = kinds.add_parser("detection", help="per-class AP@0.5, mAP@0.5 and COCO mAP of predicted boxes")
    d.add_argument("--pred", required=True, type=Path, help="predictions COCO JSON (with scores)")
    d.add_argument("--gt", required=True, type=Path, help="ground truth: VOC folder, COCO JSON or YOLO folder")
    d.add_argument("--iou", type=IOU, default=0.5, help="IoU for a true positive, in (0, 1]")
    d.add_argument("--score", type=FRACTION, default=0.5, help="score threshold for the confusion matrix")
    d.add_argument("--json", action="store_true", help="print exactly one JSON object")
    d.add_argument("--plots", type=Path, help="folder for PR curves and the confusion matrix (PNG)")
    d.set_defaults(run=_run_evaluate_detection)


REGISTRY = (register_detect, register_train, register_evaluate)
