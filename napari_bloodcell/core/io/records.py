"""The in-memory form of an annotated dataset that every format reads into and writes from.

One ``AnnotationSet`` holds a class list and one ``ImageRecord`` per image; each record keeps its boxes in the
box contract (float xyxy pixels + int64 labels indexing ``classes``) and, per box, a score, who made it
(``source``), its review state and free-form attributes, so a round trip through any format keeps them where the
format can.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..boxes import Boxes, Labels, as_boxes, as_labels

REVIEW_STATES = ("unreviewed", "accepted", "corrected", "rejected", "not_classed")
"""Review states of a box; a box read from a human-made file is ``accepted`` ground truth."""


@dataclasses.dataclass
class ImageRecord:
    """One image and its boxes."""

    file_name: str
    """Name as the annotation file gives it (relative to the dataset's image folder, or absolute)."""
    width: int
    height: int
    boxes: Boxes = dataclasses.field(default_factory=lambda: np.zeros((0, 4)))
    labels: Labels = dataclasses.field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    scores: np.ndarray | None = None
    """Per-box confidence (NaN where none); None when the file has no scores at all."""
    sources: list[str] | None = None
    reviews: list[str] | None = None
    attributes: list[dict[str, Any]] | None = None
    path: Path | None = None
    """Where the image was found on disk, or None when it could not be located."""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Image-level fields a format carries that we keep for the way back (e.g. COCO ``license``)."""

    def __post_init__(self) -> None:
        self.boxes = as_boxes(self.boxes)
        n = len(self.boxes)
        self.labels = as_labels(self.labels, n)
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float64).reshape(n)
        for name in ("sources", "reviews", "attributes"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries for {n} boxes")

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def stem(self) -> str:
        return Path(self.file_name).stem

    def score_list(self) -> list[float]:
        return [math.nan] * len(self) if self.scores is None else [float(s) for s in self.scores]

    def source_list(self, default: str = "file") -> list[str]:
        return [default] * len(self) if self.sources is None else list(self.sources)

    def review_list(self, default: str = "accepted") -> list[str]:
        return [default] * len(self) if self.reviews is None else list(self.reviews)

    def attribute_list(self) -> list[dict[str, Any]]:
        return [{} for _ in range(len(self))] if self.attributes is None else [dict(a) for a in self.attributes]

    def subset(self, keep: np.ndarray) -> ImageRecord:
        """A copy holding only the boxes where ``keep`` is True."""
        idx = np.flatnonzero(np.asarray(keep, dtype=bool))
        pick = lambda values: None if values is None else [values[i] for i in idx]
        return dataclasses.replace(
            self,
            boxes=self.boxes[idx],
            labels=self.labels[idx],
            scores=None if self.scores is None else self.scores[idx],
            sources=pick(self.sources),
            reviews=pick(self.reviews),
            attributes=pick(self.attributes),
        )


@dataclasses.dataclass
class AnnotationSet:
    """A class list and the images annotated with it."""

    classes: list[str]
    images: list[ImageRecord]
    format: str = "unknown"
    """Format it was read from: ``voc``, ``coco``, ``yolo``, ``csv`` or ``napari``."""
    root: Path | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    """Things a reader repaired or dropped (degenerate boxes, clipped boxes), for the user to see."""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Dataset-level fields kept for the way back (COCO ``info``, ``licenses``, category supercategories)."""

    def __post_init__(self) -> None:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"class names must be unique; got {self.classes}")
        for rec in self.images:
            if len(rec) and (rec.labels.min() < 0 or rec.labels.max() >= len(self.classes)):
                raise ValueError(f"{rec.file_name}: label outside 0..{len(self.classes) - 1}")

    @property
    def n_boxes(self) -> int:
        return sum(len(r) for r in self.images)

    def class_counts(self) -> dict[str, int]:
        """Boxes per class, every class listed (zero when absent), in class-list order."""
        counts: Counter[int] = Counter()
        for rec in self.images:
            counts.update(rec.labels.tolist())
        return {name: int(counts.get(i, 0)) for i, name in enumerate(self.classes)}

    def summary(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "images": len(self.images),
            "boxes": self.n_boxes,
            "classes": self.classes,
            "counts": self.class_counts(),
            "warnings": list(self.warnings),
        }


def check_boxes(record: ImageRecord, where: str | Path, warnings: list[str], tolerance: float = 2.0) -> ImageRecord:
    """Repair what is safe to repair and refuse what is not, the same way for every format.

    Boxes reaching at most ``tolerance`` pixels past the image edge are clipped (rounding in normalised formats
    does that); boxes further out, or with x2 < x1 / y2 < y1, are errors naming the file and the object; boxes
    of zero area (BCCD has two) are dropped. Every repair is recorded in ``warnings``.
    """
    from ..boxes import clip_boxes, outside_mask, valid_mask
    from ..errors import BloodcellInputError

    b = record.boxes
    if not len(b):
        return record
    inverted = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    if inverted.any():
        i = int(np.flatnonzero(inverted)[0])
        raise BloodcellInputError(
            f"object {i + 1} of {record.file_name}: box x1,y1,x2,y2={b[i].round(2).tolist()} has its corners "
            "swapped (x2 < x1 or y2 < y1); boxes must run from the top-left to the bottom-right corner",
            where,
        )
    far = outside_mask(b, record.width, record.height, tolerance)
    if far.any():
        i = int(np.flatnonzero(far)[0])
        raise BloodcellInputError(
            f"object {i + 1} of {record.file_name}: box x1,y1,x2,y2={b[i].round(2).tolist()} lies outside the "
            f"{record.width}x{record.height} image (allowed: 0..{record.width} x 0..{record.height}, "
            f"{tolerance:g} px tolerance)",
            where,
        )
    near = outside_mask(b, record.width, record.height, 0.0)
    if near.any():
        noticeable = outside_mask(b, record.width, record.height, 0.01)  # not just the rounding of 6-digit YOLO
        if noticeable.any():
            warnings.append(f"{where}: {record.file_name}: clipped {int(noticeable.sum())} box(es) to the image edge")
        record = dataclasses.replace(record, boxes=clip_boxes(b, record.width, record.height))
    keep = valid_mask(record.boxes)
    if not keep.all():
        warnings.append(f"{where}: {record.file_name}: dropped {int((~keep).sum())} box(es) of zero area")
        record = record.subset(keep)
    return record
