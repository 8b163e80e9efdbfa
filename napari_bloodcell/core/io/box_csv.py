"""Box tables in CSV (the layout of ``bcd_aslan/annotations.csv``): one row per box.

Columns ``image`` (file name, looked up beside the CSV or in ``images/``), ``xmin, ymin, xmax, ymax`` and
``label``; coordinates are taken as normalised 0..1 when every value lies in that range, else as pixels.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..boxes import normalised_xyxy_to_xyxy
from ..errors import BloodcellInputError
from .images import image_size
from .records import AnnotationSet, ImageRecord, check_boxes

REQUIRED_COLUMNS = ("image", "xmin", "ymin", "xmax", "ymax", "label")


def looks_like_box_csv(path: str | Path) -> bool:
    path = Path(path)
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = [h.strip() for h in fh.readline().split(",")]
    return all(col in header for col in REQUIRED_COLUMNS)


def read_box_csv(path: str | Path) -> AnnotationSet:
    path = Path(path)
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise BloodcellInputError("no such file", path) from None
    if not rows or any(col not in rows[0] for col in REQUIRED_COLUMNS):
        raise BloodcellInputError(f"needs the columns {', '.join(REQUIRED_COLUMNS)}", path)
    try:
        coords = np.array([[float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")] for r in rows])
    except (TypeError, ValueError) as exc:
        raise BloodcellInputError(f"a coordinate is not a number ({exc})", path) from None
    normalised = bool(coords.size and coords.min() >= 0 and coords.max() <= 1.0)
    classes = sorted({r["label"] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    order: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        order.setdefault(r["image"], []).append(i)
    warnings: list[str] = []
    records = []
    for name, idx in order.items():
        image = next((c for c in (path.parent / name, path.parent / "images" / name) if c.is_file()), None)
        if image is None:
            raise BloodcellInputError(f"image {name!r} not found beside the CSV or in images/", path)
        width, height = image_size(image)
        boxes = normalised_xyxy_to_xyxy(coords[idx], width, height) if normalised else coords[idx]
        record = ImageRecord(
            file_name=name, width=width, height=height, boxes=boxes,
            labels=[index[rows[i]["label"]] for i in idx], path=image,
        )
        records.append(check_boxes(record, path, warnings))
    return AnnotationSet(classes=classes, images=records, format="csv", root=path.parent, warnings=warnings)
