"""The box contract, and every conversion to and from it.

Inside the code a set of boxes is a float64 array of shape (N, 4) holding ``x1, y1, x2, y2`` in pixels, with the
origin at the top-left corner of the top-left pixel (so a box covering pixels 0..9 horizontally is ``x1=0, x2=10``),
plus an int64 array of N labels (0-based indices into the class list; detectors that reserve 0 for background shift
by one at their own edge). This is torchvision's convention. Every other form is converted here, at the edge:

==========  ======================================================================================
napari      rectangle as 4 corners ``(row, col)`` = ``(y, x)``, optionally with a leading plane index
COCO        ``x, y, w, h`` in pixels, category ids from 1
VOC         integer ``xmin, ymin, xmax, ymax``, 1-based, both ends inclusive (pixel ``xmin`` .. ``xmax``)
YOLO        ``cx, cy, w, h`` normalised by the image width and height
==========  ======================================================================================
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

Boxes = NDArray[np.float64]
Labels = NDArray[np.int64]


def as_boxes(boxes: ArrayLike) -> Boxes:
    """Validate and return boxes as a float64 (N, 4) array (an empty input gives shape (0, 4))."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) as x1, y1, x2, y2; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("boxes contain NaN or infinite coordinates")
    return arr


def as_labels(labels: ArrayLike, n: int | None = None) -> Labels:
    """Validate and return labels as an int64 (N,) array."""
    arr = np.asarray(labels)
    if arr.size == 0:
        arr = np.zeros((0,), dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"labels must be one-dimensional; got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
        raise ValueError("labels must be integers")
    arr = arr.astype(np.int64)
    if n is not None and len(arr) != n:
        raise ValueError(f"got {len(arr)} labels for {n} boxes")
    return arr


def widths_heights(boxes: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    b = as_boxes(boxes)
    return b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]


def area(boxes: ArrayLike) -> NDArray[np.float64]:
    w, h = widths_heights(boxes)
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def clip_boxes(boxes: ArrayLike, width: float, height: float) -> Boxes:
    """Clamp boxes to the image ``[0, width] x [0, height]``."""
    b = as_boxes(boxes).copy()
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, width)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, height)
    return b


def valid_mask(boxes: ArrayLike, min_size: float = 1e-6) -> NDArray[np.bool_]:
    """True for boxes whose width and height both exceed ``min_size`` (degenerate boxes are False)."""
    w, h = widths_heights(boxes)
    return (w > min_size) & (h > min_size)


def outside_mask(boxes: ArrayLike, width: float, height: float, tolerance: float = 1.0) -> NDArray[np.bool_]:
    """True for boxes that reach more than ``tolerance`` pixels beyond the image."""
    b = as_boxes(boxes)
    return (
        (b[:, 0] < -tolerance)
        | (b[:, 1] < -tolerance)
        | (b[:, 2] > width + tolerance)
        | (b[:, 3] > height + tolerance)
    )


# ----------------------------------------------------------------------------------------------------- COCO


def xyxy_to_xywh(boxes: ArrayLike) -> Boxes:
    b = as_boxes(boxes)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def xywh_to_xyxy(boxes: ArrayLike) -> Boxes:
    b = as_boxes(boxes)
    return np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], axis=1)


def labels_to_coco_ids(labels: ArrayLike) -> NDArray[np.int64]:
    """0-based labels to COCO category ids, which start at 1."""
    return as_labels(labels) + 1


def coco_ids_to_labels(category_ids: ArrayLike) -> Labels:
    return as_labels(category_ids) - 1


# ------------------------------------------------------------------------------------------------------ VOC


def xyxy_to_voc(boxes: ArrayLike) -> NDArray[np.int64]:
    """Pixel-edge boxes to VOC's inclusive 1-based pixel indices (rounded to whole pixels)."""
    b = as_boxes(boxes)
    out = np.empty(b.shape, dtype=np.int64)
    out[:, 0] = np.floor(b[:, 0] + 0.5).astype(np.int64) + 1
    out[:, 1] = np.floor(b[:, 1] + 0.5).astype(np.int64) + 1
    out[:, 2] = np.floor(b[:, 2] + 0.5).astype(np.int64)
    out[:, 3] = np.floor(b[:, 3] + 0.5).astype(np.int64)
    return out


def voc_to_xyxy(boxes: ArrayLike) -> Boxes:
    """VOC's inclusive 1-based pixel indices to pixel-edge boxes: pixel ``xmin`` starts at edge ``xmin - 1``."""
    b = as_boxes(boxes)
    return np.stack([b[:, 0] - 1, b[:, 1] - 1, b[:, 2], b[:, 3]], axis=1)


# ----------------------------------------------------------------------------------------------------- YOLO


def xyxy_to_yolo(boxes: ArrayLike, width: float, height: float) -> Boxes:
    """Pixel boxes to YOLO's normalised ``cx, cy, w, h``."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive; got width={width}, height={height}")
    b = as_boxes(boxes)
    return np.stack(
        [
            (b[:, 0] + b[:, 2]) / 2 / width,
            (b[:, 1] + b[:, 3]) / 2 / height,
            (b[:, 2] - b[:, 0]) / width,
            (b[:, 3] - b[:, 1]) / height,
        ],
        axis=1,
    )


def yolo_to_xyxy(boxes: ArrayLike, width: float, height: float) -> Boxes:
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive; got width={width}, height={height}")
    b = as_boxes(boxes)
    cx, cy, w, h = b[:, 0] * width, b[:, 1] * height, b[:, 2] * width, b[:, 3] * height
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def normalised_xyxy_to_xyxy(boxes: ArrayLike, width: float, height: float) -> Boxes:
    """Corner boxes normalised to 0..1 (as in some CSV exports) to pixels."""
    b = as_boxes(boxes)
    return b * np.array([width, height, width, height], dtype=np.float64)


# --------------------------------------------------------------------------------------------------- napari


def xyxy_to_napari(boxes: ArrayLike, plane: ArrayLike | None = None) -> NDArray[np.float64]:
    """Boxes to napari rectangles: (N, 4, 2) corners as (row, col), or (N, 4, 3) with a leading plane index.

    Corner order is top-left, top-right, bottom-right, bottom-left, as napari draws a rectangle.
    """
    b = as_boxes(boxes)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    rows = np.stack([y1, y1, y2, y2], axis=1)
    cols = np.stack([x1, x2, x2, x1], axis=1)
    corners = np.stack([rows, cols], axis=2)
    if plane is None:
        return corners
    planes = np.broadcast_to(np.asarray(plane, dtype=np.float64), (len(b),))
    return np.concatenate([np.repeat(planes[:, None, None], 4, axis=1), corners], axis=2)


def napari_to_xyxy(shapes: ArrayLike | list) -> tuple[Boxes, NDArray[np.int64] | None]:
    """napari rectangles (or any polygons) to the boxes that enclose them, and their plane index if any.

    Accepts an (N, K, 2|3) array or a list of (K, 2|3) arrays. Returns ``(boxes, planes)`` where ``planes`` is
    None for 2D shapes.
    """
    if isinstance(shapes, np.ndarray) and shapes.ndim == 3:
        items = list(shapes)
    else:
        items = [np.asarray(s, dtype=np.float64) for s in shapes]
    if not items:
        return np.zeros((0, 4)), None
    ndims = {s.shape[-1] for s in items}
    if len(ndims) != 1 or ndims.pop() not in (2, 3):
        raise ValueError("napari shapes must all be 2D (row, col) or all 3D (plane, row, col)")
    boxes = np.array(
        [[s[:, -1].min(), s[:, -2].min(), s[:, -1].max(), s[:, -2].max()] for s in items], dtype=np.float64
    )
    if items[0].shape[-1] == 2:
        return boxes, None
    planes = np.array([int(round(float(s[0, 0]))) for s in items], dtype=np.int64)
    return boxes, planes


# ---------------------------------------------------------------------------------------------------- masks


def boxes_from_mask(mask: ArrayLike, connectivity: int = 2, min_area: int = 1) -> tuple[Boxes, NDArray[np.int64]]:
    """Boxes around the objects of a 2D mask, as the RBC paper turns its masks into boxes.

    A binary mask is split into connected components (8-connectivity by default); an instance mask (integer ids,
    0 = background) gives one box per id, enclosing all of that id's pixels. Returns ``(boxes, ids)`` with ids the
    component numbers (binary input) or the instance ids, in increasing order; objects smaller than ``min_area``
    pixels are dropped.
    """
    from scipy import ndimage
    from skimage.measure import label as label_components

    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2D; got shape {m.shape}")
    if m.dtype == bool or set(np.unique(m).tolist()) <= {0, 1}:
        instances = label_components(m.astype(bool), connectivity=connectivity)
    else:
        if m.dtype.kind not in "iu":
            raise ValueError(f"an instance mask must hold integer ids; got dtype {m.dtype}")
        instances = m.astype(np.int64)
    ids = np.unique(instances)
    ids = ids[ids > 0]
    if len(ids) == 0:
        return np.zeros((0, 4)), np.zeros((0,), dtype=np.int64)
    slices = ndimage.find_objects(instances)
    counts = np.bincount(instances.ravel())
    boxes, kept = [], []
    for obj_id in ids:
        sl = slices[obj_id - 1]
        if sl is None or counts[obj_id] < min_area:
            continue
        rs, cs = sl
        boxes.append([cs.start, rs.start, cs.stop, rs.stop])
        kept.append(obj_id)
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(kept, dtype=np.int64)


def crop_square(pixels: np.ndarray, box: ArrayLike, margin: float = 0.15) -> np.ndarray:
    """A square crop centred on ``box``: its longer side plus ``margin`` of context on each side; where the square
    leaves the image, the border pixels are repeated (so a cell at the edge keeps its shape and size)."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    side = max(x2 - x1, y2 - y1, 1.0) * (1.0 + 2.0 * margin)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    c1, r1 = int(np.floor(cx - side / 2)), int(np.floor(cy - side / 2))
    n = max(1, int(np.ceil(side)))
    h, w = pixels.shape[:2]
    rows = np.clip(np.arange(r1, r1 + n), 0, h - 1)
    cols = np.clip(np.arange(c1, c1 + n), 0, w - 1)
    return pixels[rows[:, None], cols[None, :]]


def pad_square(pixels: np.ndarray) -> np.ndarray:
    """Pad the shorter side of a crop by repeating its border, so resizing to a square keeps the cell's shape."""
    h, w = pixels.shape[:2]
    if h == w:
        return pixels
    n = max(h, w)
    rows = np.clip(np.arange(n) - (n - h) // 2, 0, h - 1)
    cols = np.clip(np.arange(n) - (n - w) // 2, 0, w - 1)
    return pixels[rows[:, None], cols[None, :]]
