"""Any smear field as the models see it: 8-bit RGB, however it was stored (grey, RGBA, 16-bit, float).

It lives in ``io`` because readers, datasets, export, inference and the review's thumbnails all need the same
conversion; a dataset importing it from inference ran back up the layers. Scaling is by the *whole* field's range
(:func:`intensity_range`), so a cell cut out of a field keeps the colour it has in the field.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import BloodcellInputError


def as_rgb(image: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """uint8 RGB from greyscale, RGBA, 16-bit or float input; a clear error for anything else.

    ``value_range`` is the intensity mapped to 0..255 (:func:`intensity_range` of the whole field, so every tile
    of a field read in pieces is scaled alike); None takes it from ``image`` itself. uint8 is used as it is."""
    img = np.asarray(image)
    if img.ndim != 2 and (img.ndim != 3 or img.shape[-1] not in (3, 4)):
        raise BloodcellInputError(f"a field must be a 2D greyscale or RGB(A) image; got an array of shape {img.shape}")
    if img.ndim == 3:
        img = img[..., :3]
    if img.dtype != np.uint8:
        img = _to_uint8(img, intensity_range(img) if value_range is None else value_range)
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return img


def intensity_range(image: np.ndarray) -> tuple[float, float]:
    """The intensities of ``image`` that become 0..255 (see :func:`display_range`)."""
    img = np.asarray(image)
    return display_range(img.dtype, *finite_min_max(img[..., :3] if img.ndim == 3 else img))


def finite_min_max(img: np.ndarray) -> tuple[float, float]:
    """Smallest and largest finite value (NaN, NaN when there is none): NaN/inf pixels must not set the scale."""
    if not img.size:
        return math.nan, math.nan
    if img.dtype.kind == "f":
        finite = np.isfinite(img)
        if not finite.all():
            img = img[finite]
            if not img.size:
                return math.nan, math.nan
    return float(img.min()), float(img.max())


def display_range(dtype: Any, lo: float, hi: float) -> tuple[float, float]:
    """The intensity range a detector sees as black..white, from the dtype and the finite range ``lo..hi``.

    Floats within 0..1 are fractions of white (0..1 → 0..255), floats within 0..255 are 8-bit values stored as
    floats, other floats are stretched min..max. Integers within 0..255 are 8-bit values; larger ones are scaled
    by their actual maximum (a 12-bit camera in a 16-bit file is not near-black); negative ones min..max. NaN and
    infinite pixels do not count (:func:`_to_uint8` paints them white, an empty slide)."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_ or not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if dtype.kind == "f" and lo >= 0 and hi <= 1:
        return 0.0, 1.0
    if lo >= 0 and hi <= 255:
        return 0.0, 255.0
    if lo >= 0 and dtype.kind in "ui":
        return 0.0, hi
    return lo, hi if hi > lo else lo + 1.0


def _to_uint8(img: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """``lo..hi`` → 0..255, rounded; NaN and +inf become white (an empty slide), -inf black."""
    lo, hi = float(value_range[0]), float(value_range[1])
    f = img.astype(np.float32)
    if f.dtype.kind == "f" and not np.isfinite(f).all():
        np.nan_to_num(f, copy=False, nan=hi, posinf=hi, neginf=lo)
    f -= lo
    f *= 255.0 / (hi - lo if hi > lo else 1.0)
    np.clip(f, 0.0, 255.0, out=f)
    return np.rint(f, out=f).astype(np.uint8)
