"""A whole point set turned into cells (boxes): each image's points paired with its detected boxes, or boxes grown
from the cell outline, as an :class:`AnnotationSet` that training, review and every box format take."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import BloodcellInputError
from .io.points import PointSet
from .io.records import AnnotationSet, ImageRecord


def cells_from_point_set(pset: PointSet, boxes: AnnotationSet | None = None, box_class: str | None = None
                         ) -> tuple[AnnotationSet, dict[str, Any]]:
    """Cells of every image of ``pset``; with ``boxes`` (a detector's output, matched by image stem; only boxes of
    ``box_class`` when given) points are paired with the box that contains them, the rest grown. The report
    counts paired, grown and fallback boxes and the detected boxes no point claimed."""
    from .io.images import read_image
    from .io.rgb import as_rgb
    from .point_cells import cells_from_points

    by_stem = {Path(r.file_name).stem: r for r in boxes.images} if boxes is not None else {}
    if box_class is not None and boxes is not None and box_class not in boxes.classes:
        raise BloodcellInputError(f"box class {box_class!r} is not one of {boxes.classes}")
    totals = {"images": 0, "points": 0, "cells": 0, "paired": 0, "grown": 0, "fallback": 0, "unpaired_boxes": 0}
    unpaired: dict[str, int] = {}
    records = []
    for rec in pset.images:
        if rec.path is None:
            raise BloodcellInputError(f"image {rec.file_name} was not found; growing a box needs its pixels")
        detected = None
        found = by_stem.get(rec.stem)
        if found is not None:
            keep = np.ones(len(found), bool) if box_class is None else found.labels == boxes.classes.index(box_class)
            detected = found.boxes[keep]
        cells = cells_from_points(as_rgb(read_image(rec.path)), rec.points, rec.labels, detected)
        attributes = [{"point": [round(float(x), 2), round(float(y), 2)], "box_from": str(s)}
                      for (x, y), s in zip(rec.points, cells.source, strict=True)]
        records.append(ImageRecord(rec.file_name, rec.width, rec.height, cells.boxes, cells.labels,
                                   attributes=attributes, path=rec.path))
        n_unpaired = len(cells.report.get("unpaired_boxes", []))
        if n_unpaired:
            unpaired[rec.file_name] = n_unpaired
        totals["images"] += 1
        totals["points"] += len(rec)
        totals["cells"] += len(cells.boxes)
        totals["unpaired_boxes"] += n_unpaired
        for k in ("paired", "grown", "fallback"):
            totals[k] += int(cells.report.get(k, 0))
    totals["unpaired_boxes_per_image"] = unpaired
    return AnnotationSet(list(pset.classes), records, "points", warnings=list(pset.warnings)), totals
