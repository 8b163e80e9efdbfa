"""Box tables in CSV (the layout of ``bcd_aslan/annotations.csv``): one row per box.

Columns ``image`` (file name, looked up beside the CSV or in ``images/``), ``xmin, ymin, xmax, ymax`` and
``label``; coordinates are taken as normalised 0..1 when every value lies in that range, else as pixels.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..boxes import normalised_xyxy_to_xyxy
from ..errors import BloodcellInputError
from ..untrusted import class_name, finite, image_file, is_regular_file, read_text
from .images import image_size
from .records import AnnotationSet, ImageRecord, check_boxes

REQUIRED_COLUMNS = ("image", "xmin", "ymin", "xmax", "ymax", "label")


def looks_like_box_csv(path: str | Path) -> bool:
    path = Path(path)
    if path.suffix.lower() != ".csv" or not is_regular_file(path):
        return False
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = [h.strip() for h in fh.readline(65536).split(",")]
    return all(col in header for col in REQUIRED_COLUMNS)


def read_box_csv(path: str | Path) -> AnnotationSet:
    path = Path(path)
    text = read_text(path)
    try:
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise BloodcellInputError(f"malformed CSV: {exc}", path) from None
    if not rows or any(col not in rows[0] for col in REQUIRED_COLUMNS):
        raise BloodcellInputError(f"needs the columns {', '.join(REQUIRED_COLUMNS)}", path)
    coords = np.array([[finite(r[k], f"row {i + 2}: {k}", path) for k in ("xmin", "ymin", "xmax", "ymax")]
                       for i, r in enumerate(rows)], dtype=np.float64).reshape(-1, 4)
    labels = [class_name(r["label"], path) for r in rows]
    names = [r["image"] for r in rows]
    if any(not isinstance(n, str) or not n.strip() for n in names):
        raise BloodcellInputError("a row has no image name", path)
    normalised = bool(coords.size and coords.min() >= 0 and coords.max() <= 1.0)
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    order: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        order.setdefault(name, []).append(i)
    warnings: list[str] = []
    records = []
    for name, idx in order.items():
        image = next((c for c in (path.parent / name, path.parent / "images" / name) if image_file(c) is not None),
                     None)
        if image is None:
            raise BloodcellInputError(f"image {name[:80]!r} not found beside the CSV or in images/ (or not an image)",
                                      path)
        width, height = image_size(image)
        boxes = normalised_xyxy_to_xyxy(coords[idx], width, height) if normalised else coords[idx]
        record = ImageRecord(
            file_name=name, width=width, height=height, boxes=boxes,
            labels=[index[labels[i]] for i in idx], path=image,
        )
        records.append(check_boxes(record, path, warnings))
    return AnnotationSet(classes=classes, images=records, format="csv", root=path.parent, warnings=warnings)
