"""Point annotations turned into cells (boxes), for training and review.

Pathologists often mark a cell with one click at its centre (Chula RBC-12 is labelled that way). Classifiers and
the review need a box per cell, so a point becomes a cell in one of two ways:

* **pairing** with detector boxes (:func:`pair_points`): each point takes at most one box that contains it and each
  box at most one point, the assignment minimising centre distances (Hungarian, SciPy), containment being a hard
  constraint; what stays unpaired is reported, not guessed;
* **growing** from the cell's own outline (:func:`grow_boxes`): a foreground mask of the stained cells (Otsu on the
  green channel's darkness, gaps closed and holes filled so pale-centred target and hypochromic cells stay
  whole), then a marker watershed on the distance transform seeded at the points, so touching cells part between
  their points. A point whose region is missing or implausible gets a square of the field's median cell size.

Everything here is NumPy/scikit-image/SciPy; nothing imports napari or Qt.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from .boxes import as_boxes, as_labels
from .errors import BloodcellInputError

MIN_AREA_FRACTION = 0.3
"""A region smaller than this fraction of the field's median region is a fragment, not a cell."""
MAX_SIZE_FACTOR = 1.9
"""Without ``max_size``, a region wider or taller than this many median cell sizes is a clump or a smear edge."""
DEFAULT_SIZE_FRACTION = 0.08
"""Fallback cell size (fraction of the shorter image side) when no region in the field is usable."""
MAX_POINTS = 200_000


def as_points(points: ArrayLike, shape: tuple[int, ...] | None = None, tolerance: float = 1.0) -> np.ndarray:
    """Validate (N, 2) x, y pixel points; inside ``shape`` (H, W, ...) give or take ``tolerance`` pixels, then
    clipped to the image (a click on the last pixel's far edge is still that pixel)."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise BloodcellInputError(f"points must have shape (N, 2) as x, y; got shape {arr.shape}")
    if len(arr) > MAX_POINTS:
        raise BloodcellInputError(f"{len(arr)} points in one field; at most {MAX_POINTS} are accepted")
    if not np.all(np.isfinite(arr)):
        raise BloodcellInputError("points contain NaN or infinite coordinates")
    if shape is not None:
        h, w = int(shape[0]), int(shape[1])
        out = (arr[:, 0] < -tolerance) | (arr[:, 0] > w + tolerance) | (arr[:, 1] < -tolerance) | (
            arr[:, 1] > h + tolerance)
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise BloodcellInputError(f"{int(out.sum())} point(s) outside the {w}x{h} image, e.g. point {i} at "
                                      f"x={arr[i, 0]:g}, y={arr[i, 1]:g}")
        arr = np.column_stack([np.clip(arr[:, 0], 0, w), np.clip(arr[:, 1], 0, h)])
    return arr


def _as_rgb_field(image: ArrayLike) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 2:
        raise BloodcellInputError(f"growing boxes needs an H x W x 3 RGB image; got shape {arr.shape}")
    if arr.dtype != np.uint8:
        from .io.rgb import as_rgb

        arr = as_rgb(arr)
    return arr


def foreground_mask(image: ArrayLike) -> np.ndarray:
    """Stained cells as True: Otsu on the green channel's darkness, gaps closed, holes filled, specks removed.

    Red cells absorb green most strongly (haemoglobin and eosin), so green separates them from the background on
    every stain seen in Chula RBC-12; saturation does not (a bluish background is as saturated as the cells).
    Pale centres (target cells, hypochromia) are closed by a small closing and hole filling."""
    from skimage.filters import threshold_otsu

    rgb = _as_rgb_field(image)
    score = ndimage.gaussian_filter(255.0 - rgb[..., 1].astype(np.float32), 1.0)
    if float(score.max() - score.min()) < 2.0:
        return np.zeros(score.shape, dtype=bool)
    fg = score > threshold_otsu(score)
    fg = ndimage.binary_opening(fg, iterations=1)
    fg = ndimage.binary_closing(fg, iterations=2)
    return ndimage.binary_fill_holes(fg)


def _regions(fg: np.ndarray, pix: np.ndarray) -> np.ndarray:
    """Watershed labels: point i seeds label i + 1; cells nobody clicked get seeds of their own (distance peaks
    away from every point) so they do not flood into their clicked neighbours."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    dist = ndimage.distance_transform_edt(fg)
    markers = np.zeros(fg.shape, dtype=np.int32)
    on = fg[pix[:, 1], pix[:, 0]]
    markers[pix[on, 1], pix[on, 0]] = np.flatnonzero(on) + 1
    peaks = peak_local_max(dist, min_distance=3, threshold_abs=2.0, exclude_border=False)
    if len(peaks):
        radius = float(np.median(dist[peaks[:, 0], peaks[:, 1]]))  # a typical cell's inscribed radius
        peaks = peak_local_max(dist, min_distance=max(3, int(0.8 * radius)), threshold_abs=max(2.0, 0.5 * radius),
                               exclude_border=False)
    if len(peaks) and on.any():
        from scipy.spatial import cKDTree

        # a peak whose inscribed disc (or a typical cell's) holds a point is that point's cell: no seed of its own
        near, _ = cKDTree(pix[on][:, ::-1]).query(peaks, k=1)
        peaks = peaks[near > np.maximum(dist[peaks[:, 0], peaks[:, 1]], 0.8 * radius)]
    if len(peaks):
        free = markers[peaks[:, 0], peaks[:, 1]] == 0
        markers[peaks[free, 0], peaks[free, 1]] = len(pix) + 1 + np.arange(int(free.sum()))
    return watershed(-dist, markers, mask=fg)


def grow_boxes(image: ArrayLike, points: ArrayLike, max_size: float | None = None) -> np.ndarray:
    """(N, 4) float64 xyxy boxes, one per (N, 2) x, y point, from each cell's own outline (module docstring).

    ``max_size`` (pixels) bounds a region's width and height; larger regions, fragments and points off any cell
    get a square of the field's median grown size centred on the point, clipped to the image."""
    return grow_boxes_report(image, points, max_size)[0]


def grow_boxes_report(image: ArrayLike, points: ArrayLike, max_size: float | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`grow_boxes` plus a boolean (N,) array: True where the box fell back to the median square."""
    rgb = _as_rgb_field(image)
    h, w = rgb.shape[:2]
    pts = as_points(points, rgb.shape)
    n = len(pts)
    if n == 0:
        return np.zeros((0, 4), np.float64), np.zeros(0, bool)
    if max_size is not None and not (np.isfinite(max_size) and max_size > 0):
        raise BloodcellInputError(f"max_size must be a positive number of pixels; got {max_size}")
    pix = np.column_stack([np.clip(np.floor(pts[:, 0]), 0, w - 1), np.clip(np.floor(pts[:, 1]), 0, h - 1)]
                          ).astype(np.int64)
    labels = _regions(foreground_mask(rgb), pix)
    own = labels[pix[:, 1], pix[:, 0]]  # duplicates share their region; off-cell points get 0
    slices = ndimage.find_objects(labels)
    areas = np.bincount(labels.ravel(), minlength=len(slices) + 1)
    boxes = np.zeros((n, 4), np.float64)
    ok = own > 0
    for i in np.flatnonzero(ok):
        sy, sx = slices[own[i] - 1]
        boxes[i] = (sx.start, sy.start, sx.stop, sy.stop)
    sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    if ok.any():
        median_area = float(np.median(areas[own[ok]]))
        ok &= areas[own] >= MIN_AREA_FRACTION * median_area
    limit = max_size if max_size is not None else (
        MAX_SIZE_FACTOR * float(np.median(sizes[ok])) if ok.any() else np.inf)
    ok &= sizes <= limit
    if ok.any():
        side = float(np.median(np.sqrt((boxes[ok, 2] - boxes[ok, 0]) * (boxes[ok, 3] - boxes[ok, 1]))))
    else:
        side = DEFAULT_SIZE_FRACTION * min(h, w)
    if max_size is not None:
        side = min(side, float(max_size))
    bad = ~ok
    half = side / 2
    boxes[bad] = np.column_stack([pts[bad, 0] - half, pts[bad, 1] - half, pts[bad, 0] + half, pts[bad, 1] + half])
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
    return boxes, bad


# ------------------------------------------------------------------------------------------------- pairing


@dataclasses.dataclass
class PointPairing:
    """Which box each point took. A point pairs with at most one box containing it, a box with at most one point."""

    box_of_point: np.ndarray
    """(N,) int64: the paired box's index, -1 when unpaired."""
    unpaired_points: np.ndarray
    unpaired_boxes: np.ndarray
    n_boxes: int

    @property
    def point_of_box(self) -> np.ndarray:
        out = np.full(self.n_boxes, -1, dtype=np.int64)
        paired = np.flatnonzero(self.box_of_point >= 0)
        out[self.box_of_point[paired]] = paired
        return out

    def summary(self) -> dict[str, int]:
        return {"points": len(self.box_of_point), "boxes": self.n_boxes,
                "paired": int((self.box_of_point >= 0).sum()),
                "unpaired_points": len(self.unpaired_points), "unpaired_boxes": len(self.unpaired_boxes)}


def pair_points(points: ArrayLike, boxes: ArrayLike) -> PointPairing:
    """One-to-one pairing of points with the boxes that contain them, nearest centres first (Hungarian).

    Among all assignments that pair as many points as possible, the one with the smallest total distance from
    each point to its box's centre is chosen: a point inside two overlapping boxes takes the one it is central
    to, unless that would leave another point without a box."""
    from scipy.optimize import linear_sum_assignment

    pts = as_points(points)
    try:
        bxs = as_boxes(boxes)
    except ValueError as exc:
        raise BloodcellInputError(str(exc)) from None
    n, m = len(pts), len(bxs)
    box_of_point = np.full(n, -1, dtype=np.int64)
    if n and m:
        x, y = pts[:, 0:1], pts[:, 1:2]
        inside = (x >= bxs[:, 0]) & (x <= bxs[:, 2]) & (y >= bxs[:, 1]) & (y <= bxs[:, 3])
        rows, cols = np.nonzero(inside)
        if len(rows):
            centres = np.column_stack([(bxs[:, 0] + bxs[:, 2]) / 2, (bxs[:, 1] + bxs[:, 3]) / 2])
            dist = np.hypot(*(pts[:, None, :] - centres[None, :, :]).transpose(2, 0, 1))
            # a pair is worth more than any distance, so the count of pairs is maximised first
            big = float(dist[inside].max()) * (min(n, m) + 1) + 1.0
            cost = np.where(inside, dist - big, 0.0)
            r, c = linear_sum_assignment(cost)
            keep = inside[r, c]
            box_of_point[r[keep]] = c[keep]
    taken = np.zeros(m, bool)
    taken[box_of_point[box_of_point >= 0]] = True
    return PointPairing(box_of_point, np.flatnonzero(box_of_point < 0), np.flatnonzero(~taken), m)


# ------------------------------------------------------------------------------------------------- cells


@dataclasses.dataclass
class PointCells:
    """One cell per point: its box, its label, and how the box was found."""

    boxes: np.ndarray
    labels: np.ndarray
    source: np.ndarray
    """(N,) str: ``paired`` (a detector box), ``grown`` (the cell outline) or ``fallback`` (median square)."""
    report: dict[str, Any]


def cells_from_points(image: ArrayLike, points: ArrayLike, labels: ArrayLike, boxes: ArrayLike | None = None,
                      max_size: float | None = None) -> PointCells:
    """A box per labelled point: the paired detector box when ``boxes`` are given, else (and for points no box
    contains) a grown box. The report counts each source and the detector boxes left without a point."""
    rgb = _as_rgb_field(image)
    pts = as_points(points, rgb.shape)
    try:
        lab = as_labels(labels, len(pts))
    except ValueError as exc:
        raise BloodcellInputError(str(exc)) from None
    out = np.zeros((len(pts), 4), np.float64)
    source = np.full(len(pts), "grown", dtype=object)
    report: dict[str, Any] = {"points": len(pts)}
    need = np.ones(len(pts), bool)
    if boxes is not None:
        pairing = pair_points(pts, boxes)
        paired = pairing.box_of_point >= 0
        out[paired] = as_boxes(boxes)[pairing.box_of_point[paired]]
        source[paired] = "paired"
        need = ~paired
        report["pairing"] = pairing.summary()
        report["unpaired_boxes"] = pairing.unpaired_boxes.tolist()
    if need.any():
        grown, fell_back = grow_boxes_report(rgb, pts[need], max_size)
        out[need] = grown
        source[np.flatnonzero(need)[fell_back]] = "fallback"
    report.update({k: int((source == k).sum()) for k in ("paired", "grown", "fallback")})
    return PointCells(out, lab, source.astype(str), report)
