"""The split of a whole-slide field's cells into the region under review and the rest (see
:mod:`.review_project`)."""

from __future__ import annotations

import numpy as np

from .annotations import AnnotationTable, Rows


def split_region(table: AnnotationTable, region: tuple[int, int, int, int]) -> tuple[AnnotationTable, Rows]:
    """The cells whose box centre lies in ``region`` (y0, y1, x0, x1 pixels) as a table of their own, and the rest.

    The region's table keeps the field's ``next_id`` (cells drawn in it get ids no cell outside has), revision and
    sign-off; write both back with ``Autosaver(..., outside=rest)``."""
    y0, y1, x0, x1 = region
    b = table.col("box")
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    inside = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
    part = AnnotationTable(table.classes, table.rows.take(np.flatnonzero(inside)), next_id=table.next_id)
    part.revision, part.signed = table.revision, table.signed
    return part, table.rows.take(np.flatnonzero(~inside))
