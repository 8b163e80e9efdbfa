"""Point annotations <-> napari Points layers, and a Points layer as cells for the review.

One click per cell is how pathologists often label (Chula-RBC-12 marks every red cell so). A point set opens as
one Points layer with ``class`` (categorical), ``source`` and ``review`` features, coloured by class with the same
fixed palette as boxes (so a class has one colour everywhere), class names as text that is off by default (a
field of 40 labelled dots is unreadable with text on). Several images become a lazy image stack with 3D points
whose first coordinate is the image index, as box sets do. napari's points are (row, col) = (y, x); files are x, y.
Kept apart from ``layers.py`` to keep modules small.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import BloodcellInputError
from .layers import (
    SMEAR_UNITS,
    LayerDataTuple,
    _lazy_stack,
    _text_colours,
    class_colours,
    image_file_layer,
    image_layer,
)

POINT_DEFAULTS = {"source": "person", "review": "corrected"}
"""A point a person adds by hand is theirs, as a drawn box is."""


def _record_meta(rec: Any) -> dict[str, Any]:
    return {"file_name": rec.file_name, "width": int(rec.width), "height": int(rec.height),
            "path": str(rec.path) if rec.path else None}


def _cycle(present: list[str], classes: list[str], colours: dict[str, str]) -> list[str]:
    """napari hands a colour cycle to the classes present in sorted order (a dict cycle given through a reader is
    not kept), so the cycle is ordered that way: each class gets its fixed colour, as boxes do."""
    order = sorted(set(present))
    order += [c for c in classes if c not in order]
    return [colours[c] for c in order] or ["#ffff00"]


def point_size(records: list[Any]) -> float:
    """Dots about a sixth of a typical cell (a red cell is ~1/10 of a 640x480 field's short side): visible at the
    whole-field zoom, small enough to leave the cell itself visible."""
    side = min((min(r.width, r.height) for r in records), default=480)
    return float(max(4.0, side / 60))


def points_layer(pset: Any, name: str, source: str | None = None) -> LayerDataTuple:
    """Every point of a :class:`~...core.io.points.PointSet` as one Points layer (3D when several images)."""
    import pandas as pd

    stacked = len(pset.images) > 1
    parts, classes = [], []
    for k, rec in enumerate(pset.images):
        yx = np.asarray(rec.points, dtype=np.float64)[:, ::-1].reshape(-1, 2)
        parts.append(np.column_stack([np.full(len(yx), float(k)), yx]) if stacked else yx)
        classes += [pset.classes[int(i)] for i in rec.labels]
    data = np.concatenate(parts) if parts else np.zeros((0, 3 if stacked else 2))
    features = pd.DataFrame({"class": pd.Categorical(classes, categories=list(pset.classes)),
                             "source": ["file"] * len(data), "review": ["accepted"] * len(data)})
    colours = class_colours(list(pset.classes))
    kwargs: dict[str, Any] = {
        "name": name,
        "ndim": 3 if stacked else 2,
        "units": SMEAR_UNITS,
        "features": features,
        "feature_defaults": {"class": pset.classes[0] if pset.classes else "cell", **POINT_DEFAULTS},
        "face_color": "class",
        "face_color_cycle": _cycle(classes, list(pset.classes), colours),
        "border_color": "white",
        "border_width": 0.15,
        "size": point_size(pset.images),
        "text": {"string": "{class}", "size": 8, "anchor": "upper_left", "visible": False,
                 "translation": [0, -4, 4] if stacked else [-4, 4], "color": _text_colours(colours)},
        "metadata": {
            "classes": list(pset.classes),
            "class_colours": colours,
            "images": [_record_meta(r) for r in pset.images],
            "format": pset.format,
            "source": source,
            "kind": "points",
        },
    }
    return data, kwargs, "points"


def point_layers(pset: Any, name: str, source: str | None = None) -> list[LayerDataTuple]:
    """Image (or lazy image stack) + Points for a point set; its warnings go to napari's notifications."""
    for message in pset.warnings:
        warnings.warn(message, stacklevel=2)
    if not pset.images:
        raise BloodcellInputError("holds no images", source)
    missing = [r.file_name for r in pset.images if r.path is None]
    if missing:
        warnings.warn(f"{len(missing)} image(s) not found on disk (first: {missing[0]}); points shown without them",
                      stacklevel=2)
    layers: list[LayerDataTuple] = []
    if len(pset.images) > 1:
        if len(missing) < len(pset.images):
            layers.append(image_layer(_lazy_stack(pset.images), name=name, path=None))
    elif pset.images[0].path is not None:
        rec = pset.images[0]
        layers.append(image_file_layer(rec.path, name=Path(rec.file_name).stem))
    layers.append(points_layer(pset, name=f"{name} points", source=source))
    return layers


# ------------------------------------------------------------------------------------------------- layer -> file


def _class_column(features: Any, n: int) -> list[str]:
    if features is None or len(features) != n or "class" not in features:
        return ["cell"] * n
    return [str(c) for c in features["class"]]


def layer_point_set(data: Any, attributes: dict[str, Any], images: list[dict[str, Any]] | None = None) -> Any:
    """A Points layer's points and ``class`` feature back to a PointSet, for the writers. ``images``
    (file_name/width/height/path dicts) overrides the layer metadata; one is needed for the image size."""
    from ..core.io.points import PointRecord, PointSet

    meta = attributes.get("metadata") or {}
    image_meta = images or meta.get("images")
    if not image_meta:
        raise BloodcellInputError("this Points layer is not linked to an image, so the image size is unknown; open "
                                  "the points through napari-bloodcell or add the image layer first")
    arr = np.asarray(data, dtype=np.float64)
    arr = arr.reshape(0, 2) if arr.size == 0 else arr
    if arr.ndim != 2 or arr.shape[1] not in (2, 3):
        raise BloodcellInputError(f"points of shape {arr.shape}; 2D fields (row, col) or a stack (image, row, col) "
                                  "are supported")
    if not np.all(np.isfinite(arr)):
        raise BloodcellInputError("the layer holds points with NaN or infinite coordinates")
    names = _class_column(attributes.get("features"), len(arr))
    classes = [str(c) for c in (meta.get("classes") or [])]
    classes += [c for c in dict.fromkeys(names) if c not in classes]
    index = {c: i for i, c in enumerate(classes)}
    planes = np.rint(arr[:, 0]).astype(np.int64) if arr.shape[1] == 3 else np.zeros(len(arr), np.int64)
    bad = planes[(planes < 0) | (planes >= len(image_meta))]
    if len(bad):
        raise BloodcellInputError(f"a point lies on image plane {int(bad[0])}; the layer has {len(image_meta)} "
                                  "image(s)")
    labels = np.asarray([index[c] for c in names], dtype=np.int64)
    records = []
    for k, im in enumerate(image_meta):
        pick = planes == k
        xy = arr[pick][:, -2:][:, ::-1]
        width, height = int(im["width"]), int(im["height"])
        from ..core.point_cells import as_points

        xy = as_points(xy, (height, width))
        records.append(PointRecord(str(im["file_name"]), width, height, xy, labels[pick],
                                   Path(im["path"]) if im.get("path") else None))
    return PointSet(classes, records, "napari")


# ------------------------------------------------------------------------------------------- layer -> review cells


def _plane_for(meta: dict[str, Any], image: dict[str, Any]) -> int | None:
    images = meta.get("images") or []
    names = [Path(str(im.get("file_name", ""))).name for im in images]
    if image["file_name"] in names:
        return names.index(image["file_name"])
    return 0 if len(images) == 1 else None


def table_from_points_layer(layer: Any, image: dict[str, Any], pixels: Any) -> Any:
    """Review cells from a Points layer with a ``class`` feature: a box grown around each point from the cell's
    outline (core.point_cells), the point kept in the cell's ``attributes["point"]`` (x, y) so it can be written
    back as a point, classes from ``class`` (all 13 Chula-RBC-12 types when the layer's are among them, so any
    type can be chosen), and ``source``/``review`` from the layer's features."""
    from ..core.annotations import AnnotationTable
    from ..core.io.records import ImageRecord
    from ..core.io.rgb import as_rgb
    from ..core.point_cells import as_points, grow_boxes

    meta = layer.metadata or {}
    features = layer.features
    arr = np.asarray(layer.data, dtype=np.float64)
    arr = arr.reshape(0, 2) if arr.size == 0 else arr
    keep = np.ones(len(arr), bool)
    if arr.shape[1] == 3:
        plane = _plane_for(meta, image)
        if plane is None:
            raise BloodcellInputError(f"the points layer {layer.name!r} covers several images and none is "
                                      f"{image['file_name']!r}; open that image's points to review it")
        keep = np.rint(arr[:, 0]) == plane
    elif arr.shape[1] != 2:
        raise BloodcellInputError(f"points layer {layer.name!r} has {arr.shape[1]} dimensions; 2D fields only")
    idx = np.flatnonzero(keep)
    xy = as_points(arr[idx][:, -2:][:, ::-1], (image["height"], image["width"]))
    names = _class_column(features, len(arr))
    classes = [str(c) for c in (meta.get("classes") or [])]
    if "class" in features and hasattr(features["class"], "cat"):
        classes += [str(c) for c in features["class"].cat.categories if str(c) not in classes]
    classes += [c for c in dict.fromkeys(names[i] for i in idx) if c not in classes]
    if not classes:
        classes = ["cell"]
    from ..core.io.points import CHULA_TYPES

    if set(classes) <= set(CHULA_TYPES):  # a morphology file that holds a few types: offer all 13 in the review
        classes = list(CHULA_TYPES)
    column = lambda key, default: [str(features[key].iloc[i]) if key in features else default for i in idx]
    boxes = grow_boxes(as_rgb(np.asarray(pixels)), xy) if len(xy) else np.zeros((0, 4))
    rec = ImageRecord(image["file_name"], int(image["width"]), int(image["height"]), boxes,
                      [classes.index(names[i]) for i in idx], sources=column("source", "points"),
                      reviews=column("review", "unreviewed"),
                      attributes=[{"point": [round(float(x), 2), round(float(y), 2)]} for x, y in xy])
    return AnnotationTable.from_record(rec, classes)


def cell_points(attributes: Any) -> np.ndarray:
    """(N, 2) x, y of each cell's annotated point (``attributes["point"]``), NaN for cells without one."""
    out = np.full((len(attributes), 2), np.nan)
    for k, a in enumerate(attributes):
        point = (a or {}).get("point") if isinstance(a, dict) else None
        if isinstance(point, list | tuple) and len(point) == 2:
            try:
                out[k] = [float(point[0]), float(point[1])]
            except (TypeError, ValueError):
                pass
    return out
