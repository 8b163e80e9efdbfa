"""The one way a cell is cut out of a field, for the export's crops, classifier training and classification.

A classifier learns from crops and is later shown crops; if the two are cut differently (another margin, a
non-square crop later padded, another intensity scaling) it is tested on pictures unlike those it learnt from.
So export (``core/export.py``), training (``CropDataset``) and inference (``inference/classify.py``) all call
:func:`cell_crop`, and a test checks that an exported crop is, pixel for pixel, the crop classification sees.

The crop is a **square** centred on the box: the box's longer side plus :data:`CROP_CONTEXT` (15%) of it on each
side. Square, because every classifier input is square: a crop resized to a square keeps the cell's shape,
and a cell at the image border keeps its size (the border pixels repeat instead of the crop shrinking). 15% is
the context classification has always used (every classifier checkpoint records its own), so trained models keep
seeing what they learnt from; the export's old 10% non-square crops were the odd ones out.
Pixels are 8-bit RGB scaled by the **whole field's** intensity range (:func:`..io.rgb.as_rgb`), so a cell keeps
the colour it has in the field, whatever its neighbours.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import ArrayLike

from .boxes import crop_square, pad_square
from .io.rgb import as_rgb, intensity_range

CROP_CONTEXT = 0.15
"""Context on each side of a box, as a fraction of its longer side (export, training and inference alike)."""


def field_range(pixels: np.ndarray) -> tuple[float, float] | None:
    """The intensity range that becomes 0..255 for every crop of this field (None for 8-bit, kept as it is)."""
    field = np.asarray(pixels)
    return None if field.dtype == np.uint8 else intensity_range(field)


def cell_crop(pixels: np.ndarray, box: ArrayLike | None, context: float = CROP_CONTEXT,
              value_range: tuple[float, float] | None = None) -> np.ndarray:
    """One cell as a classifier sees it: an 8-bit RGB square around ``box`` (xyxy pixels) with ``context``; the
    whole field padded square when ``box`` is None. ``value_range`` is :func:`field_range` of the field (found
    here when not given; pass it when cutting many cells of one 16-bit or float field)."""
    field = np.asarray(pixels)
    if value_range is None:
        value_range = field_range(field)
    piece = pad_square(field) if box is None else crop_square(field, box, context)
    return as_rgb(piece, value_range)  # cut first, convert the few pixels kept: the same pixels, less work


def cell_crops(pixels: np.ndarray, boxes: Iterable[ArrayLike], context: float = CROP_CONTEXT) -> list[np.ndarray]:
    """:func:`cell_crop` of each box of one field, its intensity range found once."""
    field = np.asarray(pixels)
    value_range = field_range(field)
    return [cell_crop(field, box, context, value_range) for box in boxes]
