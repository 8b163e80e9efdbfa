"""``bloodcell segment``, ``bloodcell train segmenter`` and ``bloodcell evaluate segmentation``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .verbs import add_cluster_arguments, add_nproc_argument, cluster_spec, command_line, json_ready, kind_group


def _patch(text: str | None) -> tuple[int, int, int] | None:
    """``96`` or ``96,96,64`` → a 3-tuple."""
    if text is None:
        return None
    from ..core.errors import BloodcellInputError

    try:
        sizes = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise BloodcellInputError(f"patch must be N or X,Y,Z voxels; got {text!r}") from None
    if len(sizes) == 1:
        sizes *= 3
    if len(sizes) != 3:
        raise BloodcellInputError(f"patch must be N or X,Y,Z voxels; got {text!r}")
    return tuple(sizes)  # type: ignore[return-value]


def _stderr_progress(quiet: bool):
    from .progress_report import reporter

    return reporter("segment", quiet)


# --------------------------------------------------------------------------------------------------- segment


def _run_segment(args: argparse.Namespace) -> int:
    from ..core.inference.segment3d import segment_files
    from ..core.progress import drain

    spec = cluster_spec(args)
    if spec.wanted:
        from ..core.scale.archive import segment_archive

        job = segment_archive(args.volumes, args.model, args.out, spec, args.device, _patch(args.patch), args.overlap,
                              args.blend, args.batch, not args.no_amp, largest_only=args.largest_component)
    else:
        job = segment_files(args.volumes, args.model, args.out, args.device, _patch(args.patch), args.overlap,
                            args.blend, args.batch, not args.no_amp, largest_only=args.largest_component)
    results = drain(job, _stderr_progress(args.quiet))
    if args.json:
        print(json.dumps(json_ready(results)))
        return 0
    if sys.stderr.isatty() and not args.quiet:
        print(file=sys.stderr)  # end the progress line
    for r in results:
        print(f"{r['case']}: {r['windows']} window(s), {r['seconds']:.1f} s -> {r['output']}")
        for w in r["warnings"]:
            print(f"  note: {w}")
    return 0


def register_segment(sub) -> None:
    p = sub.add_parser("segment", help="segment NIfTI volumes with a segmenter; label maps on each input's grid")
    p.add_argument("volumes", nargs="+", type=Path, help="NIfTI files, or folders of cases (imagesTr/ or flat)")
    p.add_argument("--model", required=True, type=Path, help="segmenter checkpoint (.pt)")
    p.add_argument("--out", required=True, type=Path, help="folder for CASE_seg.nii.gz (existing files are kept)")
    p.add_argument("--patch", help="window size, N or X,Y,Z voxels (default: the model's training patch)")
    p.add_argument("--overlap", type=float, default=0.5, help="fraction of the window shared by neighbours")
    p.add_argument("--blend", default="gaussian", choices=("gaussian", "average"))
    p.add_argument("--batch", type=int, default=2, help="windows per forward pass")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-amp", action="store_true", help="full precision on CUDA (AMP is the default there)")
    p.add_argument("--largest-component", action="store_true",
                   help="keep only each label's largest connected piece (drops stray islands)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    add_cluster_arguments(p)
    p.set_defaults(run=_run_segment)


# ------------------------------------------------------------------------------------------ train segmenter


def _run_train_segmenter(args: argparse.Namespace) -> int:
    from ..core.progress import drain
    from ..core.training.launch import train
    from ..core.training.segmentation import SegmenterTrainConfig

    arch_args = json.loads(args.arch_args) if args.arch_args else {}
    cfg = SegmenterTrainConfig(
        data=args.data, out=args.out, val=args.val, val_fraction=args.val_fraction, pair_cases=args.pair_cases,
        dataset_version=args.dataset_version, iterations=args.iterations, val_every=args.val_every,
        patch=_patch(args.patch), val_patch=_patch(args.val_patch), overlap=args.overlap, batch=args.batch,
        lr=args.lr, weight_decay=args.weight_decay, sampler=args.sampler, augment=not args.no_augment,
        init=args.init, freeze=[s for s in (args.freeze or "").split(",") if s], arch_args=arch_args,
        device=args.device, amp=not args.no_amp, seed=args.seed, resume=args.resume, keep_last=args.keep_last, command=command_line())
    result = drain(train("segmenter", cfg, args.nproc), _stderr_progress(args.quiet))
    if result is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    summary = {k: result[k] for k in ("out", "best", "device", "frozen", "trainable_parameters", "n_train", "n_val",
                                      "sampling_s_per_iter", "step_s_per_iter", "iterations_run", "initial_weights")}
    if args.json:
        print(json.dumps(json_ready(summary)))
        return 0
    best = result["best"]
    dice = ", ".join(f"{k} {v:.3f}" for k, v in best.get("dice", {}).items())
    print(f"best validation Dice at iteration {best.get('iteration')}: {dice} (mean {best['mean_dice']:.3f}); "
          f"{summary['sampling_s_per_iter'] + summary['step_s_per_iter']:.2f} s/iteration "
          f"({summary['sampling_s_per_iter']:.2f} sampling) on {summary['device']}, "
          f"{summary['trainable_parameters']} trainable parameters; wrote {result['out']}")
    return 0


def register_train_segmenter(sub) -> None:
    p = kind_group(sub, "train", "train a model").add_parser(
        "segmenter", help="train HighRes3DNet on labelled NIfTI volumes (or transfer a trained one)")
    p.add_argument("data", type=Path, help="imagesTr/+labelsTr/, a segmentation dataset, or CASE + CASE_labels files")
    p.add_argument("--out", required=True, type=Path, help="new checkpoint (.pt); OUT.last.pt holds the resumable state")
    p.add_argument("--val", type=Path, help="separate validation cases (default: --val-fraction of the case groups)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--pair-cases", action="store_true",
                   help="keep cases 2k-1 and 2k together in the split (MSD hippocampus: left/right of one scan)")
    p.add_argument("--dataset-version", type=int)
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--patch", default="96", help="training window, N or X,Y,Z (thesis: 96)")
    p.add_argument("--val-patch", help="validation window (default: --patch)")
    p.add_argument("--overlap", type=float, default=0.25, help="validation window overlap")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4, help="L2 regularisation")
    p.add_argument("--sampler", default="weighted", choices=("uniform", "weighted", "balanced"))
    p.add_argument("--no-augment", action="store_true", help="no rotation/scaling augmentation")
    p.add_argument("--init", type=Path, help="start from this segmenter checkpoint (transfer learning)")
    p.add_argument("--freeze", help="comma-separated stages to freeze: conv_0,res_1,res_2,res_3")
    p.add_argument("--arch-args", help='JSON, e.g. \'{"activation": "prelu"}\' or smaller widths for a quick test')
    p.add_argument("--device", default="auto")
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    add_nproc_argument(p)
    p.add_argument("--resume", action="store_true", help="continue the run whose OUT.last.pt is there (left by Cancel, a crash or --keep-last)")
    p.add_argument("--keep-last", action="store_true", help="keep OUT.last.pt (optimiser state, for resuming "
                   "or continuing later) after the run completes; by default only the slim best checkpoint stays")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_run_train_segmenter)


# ------------------------------------------------------------------------------------ evaluate segmentation


def _pairs_from_folders(pred_dir: Path, gt_dir: Path):
    """(case, prediction file, ground-truth file) for every ground-truth case with a prediction."""
    from ..core.datasets.volumes import find_cases
    from ..core.errors import BloodcellInputError
    from ..core.io.nifti import is_nifti_path, nifti_stem

    cases = find_cases(gt_dir)
    preds = {}
    for p in sorted(pred_dir.rglob("*")):
        if p.is_file() and is_nifti_path(p):
            stem = nifti_stem(p)
            preds[stem.removesuffix("_seg")] = p
    pairs = [(c.name, preds[c.name], c.label) for c in cases if c.name in preds]
    if not pairs:
        raise BloodcellInputError(f"no prediction matches a ground-truth case (e.g. {cases[0].name}_seg.nii.gz)",
                                  pred_dir)
    missing = [c.name for c in cases if c.name not in preds]
    return pairs, missing


def _run_evaluate_segmentation(args: argparse.Namespace) -> int:
    from ..core.datasets.volumes import find_cases, label_names_for
    from ..core.errors import BloodcellInputError
    from ..core.io.nifti import load_nifti
    from ..core.segmentation_metrics import score_case, summarise

    if (args.pred is None) == (args.model is None):
        raise BloodcellInputError("give either --pred DIR (label maps) or --model CHECKPOINT, with --gt DIR")
    names = label_names_for(args.gt)
    per_case, missing = {}, []
    if args.pred is not None:
        pairs, missing = _pairs_from_folders(args.pred, args.gt)
        for case, pred_file, gt_file in pairs:
            pred, gt = load_nifti(pred_file, as_labels=True), load_nifti(gt_file, as_labels=True)
            values = sorted(set(np.unique(gt.data).tolist()) | set(np.unique(pred.data).tolist()) - {0})
            per_case[case] = score_case(pred.data, gt.data, [v for v in values if v != 0], gt.spacing)
    else:
        from ..core.datasets.volumes import load_image_channels, probe_case
        from ..core.inference.segment3d import check_volume_shape, load_segmenter, segment_array
        from ..core.device import as_device
        from ..core.progress import drain

        seg = load_segmenter(args.model, as_device(args.device))
        names = {**seg.label_names, **names}
        cases = find_cases(args.gt)
        if args.split == "val":
            wanted = set(seg.checkpoint.get("val_cases", []))
            cases = [c for c in cases if c.name in wanted]
            if not cases:
                raise BloodcellInputError("none of the model's validation cases is in --gt (use --split all)", args.gt)
        for c in cases:  # every header first: a broken case refuses the run before the first one is segmented
            check_volume_shape(probe_case(c.images)[0].shape, c.images[0])
        for c in cases:
            image, vol = load_image_channels(c.images)
            result = drain(segment_array(seg, image, vol.spacing, _patch(args.patch), args.overlap,
                                         largest_only=args.largest_component))
            gt = load_nifti(c.label, as_labels=True)
            per_case[c.name] = score_case(result.labels, gt.data, seg.label_values[1:], gt.spacing)
    report = summarise(per_case, names)
    report["missing_predictions"] = missing
    if args.json:
        print(json.dumps(json_ready(report)))
        return 0
    print(f"{report['cases']} case(s); mean Dice over labels {report['mean_dice']:.3f}")
    for name, m in report["labels"].items():
        hd = "n/a" if m["hd95_mean"] is None else f"{m['hd95_mean']:.2f} mm"
        print(f"  {name}: Dice {m['dice_mean']:.3f} ± {m['dice_sd']:.3f} (median {m['dice_median']:.3f}), "
              f"HD95 {hd}" + (f" ({m['hd95_missing']} case(s) without one)" if m["hd95_missing"] else ""))
    if missing:
        print(f"  note: {len(missing)} ground-truth case(s) have no prediction, e.g. {missing[0]}")
    return 0


def register_evaluate_segmentation(sub) -> None:
    p = kind_group(sub, "evaluate", "score predictions against ground truth").add_parser(
        "segmentation", help="Dice and 95th-percentile Hausdorff distance per label")
    p.add_argument("--gt", required=True, type=Path, help="ground-truth cases (imagesTr/+labelsTr/ or flat)")
    p.add_argument("--pred", type=Path, help="folder of predicted label maps (CASE.nii.gz or CASE_seg.nii.gz)")
    p.add_argument("--model", type=Path, help="or: segment --gt's images with this checkpoint first")
    p.add_argument("--split", default="all", choices=("all", "val"),
                   help="with --model: every case, or only the model's recorded validation cases")
    p.add_argument("--patch", help="with --model: window size (default: the model's)")
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--largest-component", action="store_true", help="with --model: keep each label's largest piece")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_run_evaluate_segmentation)


REGISTRY = (register_segment, register_train_segmenter, register_evaluate_segmentation)
