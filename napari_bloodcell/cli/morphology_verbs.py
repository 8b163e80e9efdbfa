"""``bloodcell morphology``: type every red cell of smear fields with the red-cell morphology model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .verbs import FRACTION, json_ready, refuse_existing_out


def _run_morphology(args: argparse.Namespace) -> int:
    import numpy as np

    from ..core.errors import BloodcellInputError
    from ..core.inference.detect import detect_array, expand_inputs, load_predictor
    from ..core.io.images import read_image
    from ..core.io.points import PointRecord, PointSet, read_points, write_points
    from ..core.progress import drain
    from ..core.red_cell_typing import box_centres, load_morphology_model, type_cells

    refuse_existing_out(args.out)
    paths = expand_inputs(args.inputs)
    model = load_morphology_model(args.model)
    given = read_points(args.points).by_stem() if args.points else None
    predictor = None
    if given is None:
        predictor = load_predictor(args.detector, args.device, 1)
        if "RBC" not in predictor.classes:
            raise BloodcellInputError(f"the detector ({predictor.label}) has no RBC class; pass --points")
        if not args.quiet:
            print(f"red cells found by {predictor.label}; typed by {model.model_id}", file=sys.stderr)
    records, unsure = [], 0
    for path in paths:
        image = read_image(path)
        if given is not None:
            rec = given.get(path.stem)
            points = rec.points if rec is not None else np.zeros((0, 2))
        else:
            b, lab, _ = drain(detect_array(predictor, image, score=args.score, nms_iou=0.5))
            points = box_centres(b[lab == predictor.classes.index("RBC")])
        types, proba, _ = type_cells(model, image, points)
        unsure += int((proba.max(1) < 0.5).sum()) if len(proba) else 0
        records.append(PointRecord(path.name, int(image.shape[1]), int(image.shape[0]), points, types, path=path))
    pset = PointSet(list(model.classes), records, format="morphology")
    write_points(pset, args.out, args.format)
    counts = {k: v for k, v in pset.class_counts().items() if v}
    summary = {"images": len(records), "cells": pset.n_points, "types": counts, "below_0.5": unsure,
               "model": model.model_id, "detector": predictor.label if predictor else None, "out": str(args.out)}
    if args.json:
        print(json.dumps(json_ready(summary), indent=1))
    else:
        top = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:6])
        print(f"{pset.n_points} red cell(s) typed in {len(records)} image(s) ({top}); {unsure} with no type above "
              f"0.5; wrote {args.out}")
    return 0


def register_morphology(sub) -> None:
    p = sub.add_parser("morphology", help="type every red cell (13 Chula RBC-12 morphologies) and write points")
    p.add_argument("inputs", nargs="+", type=Path, help="image files or folders of images")
    p.add_argument("--out", required=True, type=Path,
                   help="typed points to create: .csv, .json (COCO keypoints) or a folder (x y type files)")
    p.add_argument("--format", choices=("csv", "coco", "xyt"), help="output layout (default: by suffix)")
    p.add_argument("--model", default="bundled", help="'bundled' (default, the shipped starter model) or a file")
    p.add_argument("--points", type=Path, help="red-cell centres to type (any point format) instead of detecting")
    p.add_argument("--detector", default="auto", help="detector for the red cells (default auto: active, bundled, "
                   "classical)")
    p.add_argument("--score", type=FRACTION, default=0.3, help="detector score floor (default 0.3)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_run_morphology)


REGISTRY = (register_morphology,)
