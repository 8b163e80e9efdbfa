"""Core tables <-> napari layer data (LayerDataTuples), without touching a viewer.

Boxes become a Shapes layer of rectangles whose ``features`` hold ``class``, ``score``, ``source``, ``review`` and
``attributes`` (JSON), coloured by class with the class name as text. Several images of one annotation file become
one image stack (padded to the largest, loaded lazily) with 3D rectangles whose first coordinate is the image
index, so a COCO file of 300 images opens as one scrollable pair of layers. Volumes keep their spacing as ``scale``,
the affine origin as ``translate`` and the full affine in ``metadata``.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..core.boxes import napari_to_xyxy, xyxy_to_napari
from ..core.errors import BloodcellInputError
from ..core.io.images import read_image
from ..core.morphology import canonical
from ..core.io.label_names import LabelNames
from ..core.io.nifti import Volume
from ..core.io.records import AnnotationSet, ImageRecord

LayerDataTuple = tuple[Any, dict[str, Any], str]
SMEAR_UNITS = "pixel"
"""Smear layers say ``pixel`` (napari's default, said explicitly): a smear's pixel size is rarely known, and every
layer a person or another plugin adds without ``units`` is in pixels too, so they agree. See docs/formats.md for
what napari does when a smear (pixels) and a volume (mm) share a viewer."""
VOLUME_UNITS = "mm"

KNOWN_CLASS_COLOURS = {
    "rbc": "#ff8c00",
    "wbc": "#1060ff",
    "platelets": "#00b050",
    "platelet": "#00b050",
    "neutrophil": "#1060ff",
    "eosinophil": "#e6007e",
    "lymphocyte": "#00a5a5",
    "monocyte": "#8a2be2",
    "basophil": "#303030",
}
FALLBACK_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c",
                    "#008080", "#9a6324", "#800000", "#000075", "#808000", "#ffd8b1", "#aaffc3", "#e6beff",
                    "#fabebe", "#808080", "#ffe119")
"""Distinct colours (Trubetzkoy's list) for classes without a fixed one; 19 so that the 13 red-cell morphology
types of Chula-RBC-12 each get their own."""
RED_CELL_COLOURS = {
    "normal": "#ff8c00", "macrocyte": "#e6194b", "microcyte": "#3cb44b", "spherocyte": "#4363d8",
    "target cell": "#911eb4", "stomatocyte": "#46f0f0", "ovalocyte": "#f032e6", "teardrop": "#bcf60c",
    "burr cell": "#9a6324", "schistocyte": "#800000", "uncategorised": "#808080", "hypochromia": "#ffd8b1",
    "elliptocyte": "#808000",
}
"""Fixed colours of the red-cell morphology types (Chula-RBC-12's 13; grading's names, so ``echinocyte`` is a
burr cell): a type keeps its colour whichever file or class list it comes from. Normal red cells are RBC orange."""
HUMAN_DEFAULTS = {"score": math.nan, "source": "person", "review": "corrected", "attributes": "{}"}


def class_colours(classes: list[str]) -> dict[str, str]:
    """A stable colour per class: fixed ones for blood-cell names and red-cell morphologies, a cycle for the
    rest."""
    out, k = {}, 0
    for name in classes:
        known = KNOWN_CLASS_COLOURS.get(name.lower()) or RED_CELL_COLOURS.get(canonical(name))
        if known is None:
            known = FALLBACK_COLOURS[k % len(FALLBACK_COLOURS)]
            k += 1
        out[name] = known
    return out


def image_layer(data: Any, name: str, path: Path | None = None, **extra: Any) -> LayerDataTuple:
    kwargs: dict[str, Any] = {"name": name, "metadata": {"path": str(path) if path else None}, "units": SMEAR_UNITS,
                              **extra}
    kwargs.setdefault("rgb", bool(data.ndim >= 3 and data.shape[-1] == 3))  # say it: napari's guess fails on small fields
    dtype = getattr(data, "dtype", None)
    if dtype is not None and np.dtype(dtype) == np.uint16:
        sample = np.asarray(_contrast_sample(data, kwargs["rgb"]))
        kwargs["contrast_limits"] = (float(sample.min()), float(max(sample.max(), sample.min() + 1)))
    return data, kwargs, "image"


def _contrast_sample(data: Any, rgb: bool) -> Any:
    """Pixels to set a 16-bit layer's contrast from without reading lazy data whole: one plane of a lazy stack,
    the central 1024×1024 window of a lazy (large) field."""
    if not hasattr(data, "dask"):
        return data
    if data.ndim - int(rgb) > 2:
        return data[0]
    cy, cx = data.shape[0] // 2, data.shape[1] // 2
    return data[max(0, cy - 512):cy + 512, max(0, cx - 512):cx + 512]


def image_file_layer(path: Path, name: str | None = None) -> LayerDataTuple:
    """An image file as an Image layer: read whole when small, as a lazy dask array (decoded tile by tile as napari
    shows it) above the lazy threshold, so opening a 20000×20000 scan does not decode it."""
    from ..core.io.images import open_image

    image = open_image(path)
    name = name or Path(path).stem
    if image.lazy:
        return image_layer(image.to_dask(), name=name, path=path)
    with image:
        return image_layer(image.asarray(), name=name, path=path)


def _record_meta(rec: ImageRecord) -> dict[str, Any]:
    return {"file_name": rec.file_name, "width": int(rec.width), "height": int(rec.height),
            "path": str(rec.path) if rec.path else None}


def _features(aset: AnnotationSet, records: list[ImageRecord]):
    import pandas as pd

    classes, scores, sources, reviews, attrs = [], [], [], [], []
    for rec in records:
        classes += [aset.classes[int(i)] for i in rec.labels]
        scores += rec.score_list()
        sources += rec.source_list()
        reviews += rec.review_list()
        attrs += [json.dumps(a, sort_keys=True, default=str) for a in rec.attribute_list()]
    return pd.DataFrame({
        "class": pd.Categorical(classes, categories=aset.classes),
        "score": np.asarray(scores, dtype=np.float64),
        "source": sources,
        "review": reviews,
        "attributes": attrs,
    })


def shapes_layer(aset: AnnotationSet, name: str, stacked: bool, source: str | None = None) -> LayerDataTuple:
    """The boxes of every image in ``aset`` as one Shapes layer (3D rectangles when ``stacked``)."""
    if stacked:
        parts = [xyxy_to_napari(rec.boxes, plane=k) for k, rec in enumerate(aset.images) if len(rec)]
        data = list(np.concatenate(parts)) if parts else []
    else:
        data = list(xyxy_to_napari(aset.images[0].boxes)) if aset.images else []
    colours = class_colours(aset.classes)
    kwargs = {
        "name": name,
        "ndim": 3 if stacked else 2,
        "units": SMEAR_UNITS,
        "shape_type": "rectangle",
        "features": _features(aset, aset.images),
        "feature_defaults": {"class": aset.classes[0] if aset.classes else "cell", **HUMAN_DEFAULTS},
        "edge_color": "class",
        "edge_color_cycle": _cycle_for_present_classes(aset, colours),
        "edge_width": 2,
        "face_color": "transparent",
        "text": {"string": "{class}", "size": 9, "anchor": "upper_left", "translation": [0, -2, 0] if stacked else [-2, 0],
                 "color": _text_colours(colours)},
        "metadata": {
            "classes": list(aset.classes),
            "images": [_record_meta(r) for r in aset.images],
            "format": aset.format,
            "source": source,
            "extra": _json_safe(aset.extra),
        },
    }
    return data, kwargs, "shapes"


def _text_colours(colours: dict[str, str]):
    """Class names drawn in their class's colour (napari needs the encoding object for a fixed mapping)."""
    from napari.layers.utils.color_encoding import NominalColorEncoding
    from napari.utils.colormaps.categorical_colormap import CategoricalColormap

    return NominalColorEncoding(feature="class", colormap=CategoricalColormap(colormap=colours, fallback_color="yellow"))


def _cycle_for_present_classes(aset: AnnotationSet, colours: dict[str, str]) -> list[str]:
    """napari hands out a colour cycle to the classes present in sorted order (checked on napari 0.9); ordering
    the cycle the same way gives every class its own fixed colour."""
    present = sorted({aset.classes[i] for rec in aset.images for i in rec.labels.tolist()})
    order = present + [c for c in aset.classes if c not in present]
    return [colours[c] for c in order] or ["#ffff00"]


def _json_safe(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return {}


def _lazy_stack(records: list[ImageRecord]):
    """A dask stack of the images, each read on first view and padded (bottom/right) to the largest."""
    import dask
    import dask.array as da

    height = max(r.height for r in records)
    width = max(r.width for r in records)
    first = next((r.path for r in records if r.path is not None), None)
    sample = read_image(first) if first is not None else np.zeros((1, 1, 3), np.uint8)
    channels = sample.shape[2:] if sample.ndim == 3 else ()
    shape, dtype = (height, width, *channels), sample.dtype

    def load(rec: ImageRecord) -> np.ndarray:
        out = np.zeros(shape, dtype=dtype)
        if rec.path is None:
            return out
        img = read_image(rec.path)
        if img.ndim == 2 and channels:
            img = np.repeat(img[..., None], channels[0], axis=2)
        elif img.ndim == 3 and not channels:
            img = img[..., 0]
        out[: img.shape[0], : img.shape[1]] = img[:height, :width]
        return out

    planes = [da.from_delayed(dask.delayed(load)(r), shape=shape, dtype=dtype) for r in records]
    return da.stack(planes)


def annotation_layers(aset: AnnotationSet, name: str, source: str | None = None) -> list[LayerDataTuple]:
    """Image (or lazy image stack) + Shapes for an annotation set; warnings go to napari's notifications."""
    for message in aset.warnings:
        warnings.warn(message, stacklevel=2)
    missing = [r.file_name for r in aset.images if r.path is None]
    if missing:
        warnings.warn(f"{len(missing)} image(s) not found on disk (first: {missing[0]}); boxes shown without them",
                      stacklevel=2)
    if not aset.images:
        raise BloodcellInputError("holds no images", source)
    stacked = len(aset.images) > 1
    layers: list[LayerDataTuple] = []
    if stacked:
        if len(missing) < len(aset.images):
            layers.append(image_layer(_lazy_stack(aset.images), name=name, path=None))
    elif aset.images[0].path is not None:
        rec = aset.images[0]
        layers.append(image_file_layer(rec.path, name=Path(rec.file_name).stem))
    layers.append(shapes_layer(aset, name=f"{name} boxes", stacked=stacked, source=source))
    return layers


def shapes_to_annotation_set(
    data: list | np.ndarray, attributes: dict[str, Any], images: list[dict[str, Any]] | None = None
) -> AnnotationSet:
    """A Shapes layer's rectangles and features back to an annotation set, for the writers.

    ``images`` (file_name/width/height/path dicts) overrides the layer metadata; one of them is required because
    COCO and YOLO need each image's size.
    """
    meta = attributes.get("metadata") or {}
    features = attributes.get("features")
    image_meta = images or meta.get("images")
    if not image_meta:
        raise BloodcellInputError(
            "this Shapes layer is not linked to an image, so the image size is unknown; open the annotations "
            "through napari-bloodcell or add the image layer first"
        )
    boxes, planes = napari_to_xyxy(data)
    n = len(boxes)
    if features is None or len(features) != n:
        import pandas as pd

        features = pd.DataFrame({"class": ["cell"] * n})
    names = [str(c) for c in features["class"]] if "class" in features else ["cell"] * n
    classes = list(meta.get("classes") or [])
    for c in names:
        if c not in classes:
            classes.append(c)
    index = {c: i for i, c in enumerate(classes)}
    column = lambda key, default: list(features[key]) if key in features else [default] * n
    scores = np.asarray(column("score", math.nan), dtype=np.float64)
    sources = [str(s) for s in column("source", "person")]
    reviews = [str(r) for r in column("review", "corrected")]
    attrs = [json.loads(a) if isinstance(a, str) and a else {} for a in column("attributes", "{}")]
    if planes is None:
        if len(image_meta) != 1:
            raise BloodcellInputError("2D boxes but the layer describes several images")
        planes = np.zeros(n, dtype=np.int64)
    bad = planes[(planes < 0) | (planes >= len(image_meta))] if n else planes
    if len(bad):
        raise BloodcellInputError(f"a box lies on image plane {int(bad[0])}; the layer has {len(image_meta)} image(s)")
    records = []
    for k, im in enumerate(image_meta):
        idx = np.flatnonzero(planes == k)
        records.append(ImageRecord(
            file_name=im["file_name"], width=int(im["width"]), height=int(im["height"]),
            boxes=boxes[idx], labels=[index[names[i]] for i in idx],
            scores=None if np.all(np.isnan(scores[idx])) else scores[idx],
            sources=[sources[i] for i in idx], reviews=[reviews[i] for i in idx],
            attributes=[attrs[i] for i in idx], path=Path(im["path"]) if im.get("path") else None,
        ))
    extra = meta.get("extra") or {}
    return AnnotationSet(classes=classes, images=records, format="napari", extra=extra)


def volume_layers(vol: Volume, name: str, label_names: LabelNames | dict[int, str] | None = None
                  ) -> list[LayerDataTuple]:
    """Image or Labels layer(s) for a NIfTI volume; 4D volumes give one Image layer per channel (at most
    MAX_CHANNELS: a 500-channel file is refused, not opened as 500 layers). The volume's warnings (a fallback
    transform, NaN voxels) go to napari's notifications. Axis labels name the anatomical directions (``L→R``); a
    label map gets a ``name`` feature per value (napari shows it on hover) and the names file's colours."""
    from ..core.io.nifti import MAX_CHANNELS

    if vol.n_channels > MAX_CHANNELS:
        raise BloodcellInputError(f"has {vol.n_channels} channels; at most {MAX_CHANNELS} open as layers", vol.path)
    found = label_names if isinstance(label_names, LabelNames) else LabelNames(names=dict(label_names or {}))
    notes = list(vol.warnings) + (found.warnings if vol.is_label_map else [])
    if not vol.is_label_map and vol.data.dtype.kind == "f" and (bad := vol.finite_range()[2]):
        notes.append(f"{bad:,} of {vol.data.size:,} voxel values are NaN or infinite (no data); the contrast "
                     "limits come from the finite ones")
    for message in notes:
        warnings.warn(f"{vol.path.name if vol.path else name}: {message}", stacklevel=2)
    meta = {
        "affine": vol.affine.tolist(),
        "spacing": list(vol.spacing),
        "orientation": "".join(vol.orientation),
        "path": str(vol.path) if vol.path else None,
        "shape": list(vol.data.shape[:3]),
    }
    common = {"scale": tuple(vol.spacing), "translate": vol.translate, "metadata": meta, "units": VOLUME_UNITS}
    if (axes := vol.axis_labels()) is not None:
        common["axis_labels"] = axes
    if vol.is_label_map:
        if found.names:  # the segment widget and the export read them here
            meta["label_names"] = {str(k): v for k, v in sorted(found.names.items())}
            meta["label_names_source"] = found.source
        return [(vol.data, {"name": name, **common, **label_kwargs(found, present_values(vol.data))}, "labels")]
    if vol.data.ndim == 4:
        names = [f"{name} [channel {c}]" for c in range(vol.n_channels)]
        lims = [_robust_limits(vol.data[..., c]) for c in range(vol.n_channels)]
        return [(vol.data, {"name": names, "channel_axis": 3, "contrast_limits": lims, "colormap": "gray",
                            "blending": "additive", **common}, "image")]
    return [(vol.data, {"name": name, "colormap": "gray", "contrast_limits": _robust_limits(vol.data), **common},
             "image")]


def present_values(data: np.ndarray) -> list[int]:
    """The values a label map holds (a count per possible value for 8/16-bit maps: no sort of every voxel)."""
    arr = np.asarray(data)
    if arr.dtype in (np.uint8, np.uint16, np.bool_):
        return np.flatnonzero(np.bincount(arr.ravel(), minlength=1)).tolist() if arr.size else []
    return [int(v) for v in np.unique(arr)]


def label_kwargs(found: LabelNames, values: list[int]) -> dict[str, Any]:
    """Labels-layer keywords for named values: ``features`` (``index`` = value, ``name``) for every named or
    present value (napari shows ``name: ...`` on hover), and a direct colormap when the names file gave colours
    (background stays transparent, values it does not colour grey)."""
    if not found.names:
        return {}
    import pandas as pd

    index = sorted(set(found.names) | {int(v) for v in values})
    out: dict[str, Any] = {"features": pd.DataFrame({"index": index, "name": [found.name_of(v) for v in index]})}
    if found.colours:
        out["colormap"] = {None: (0.6, 0.6, 0.6, 1.0), **found.colours, 0: (0.0, 0.0, 0.0, 0.0)}
    return out


def _robust_limits(data: np.ndarray) -> tuple[float, float]:
    """0.5-99.5 percentile window of the finite voxels: MRI intensities have outliers that wash out a min-max
    window, and NaN (no data, often outside the head) would make the limits NaN."""
    flat = np.asarray(data).ravel()[:: max(1, data.size // 200_000)]
    if flat.dtype.kind == "f":
        flat = flat[np.isfinite(flat)]
        if not flat.size:  # the sample missed the finite voxels, or there are none
            flat = np.asarray(data)[np.isfinite(data)]
    if not flat.size:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(flat.astype(np.float64), [0.5, 99.5]))
    if not hi > lo:
        hi = lo + max(1.0, abs(lo) * 1e-6)
    return lo, hi


def set_box_class(layer: Any, indices: list[int] | np.ndarray, class_name: str) -> None:
    """Change the class of some boxes of a Shapes layer, keeping colours, text and the human-made defaults.

    napari resets ``feature_defaults`` from the table whenever ``features`` is assigned, which would make the
    next box a person draws look machine-made; this puts them back.
    """
    import pandas as pd

    defaults = layer.feature_defaults.copy()
    features = layer.features.copy()
    column = features["class"]
    if isinstance(column.dtype, pd.CategoricalDtype) and class_name not in column.cat.categories:
        features["class"] = column.cat.add_categories([class_name])
    features.loc[np.asarray(indices, dtype=np.int64), "class"] = class_name
    layer.features = features
    layer.feature_defaults = defaults
    layer.refresh_colors(update_color_mapping=False)
    layer.refresh_text()


def set_box_classification(layer: Any, indices: np.ndarray, names: list[str] | None,
                           attributes: list[dict[str, Any]], margins: np.ndarray,
                           all_classes: list[str] | None = None) -> None:
    """Write a classifier's output on some boxes: class (unless multi-label), ``margin`` and the attributes JSON;
    every class the classifier knows becomes a class of the layer (so a type it did not predict here can still
    be chosen in review); colours follow the fixed blood-cell palette."""
    import pandas as pd

    defaults = layer.feature_defaults.copy()
    features = layer.features.copy()
    idx = np.asarray(indices, dtype=np.int64)
    if names is not None:
        column = features["class"]
        if isinstance(column.dtype, pd.CategoricalDtype):
            new = [n for n in dict.fromkeys([*(all_classes or []), *names]) if n not in column.cat.categories]
            features["class"] = column.cat.add_categories(new) if new else column
        features.loc[idx, "class"] = names
    if "margin" not in features:
        features["margin"] = np.full(len(features), math.nan)
        defaults["margin"] = math.nan
    features.loc[idx, "margin"] = np.asarray(margins, dtype=np.float64)
    old = features["attributes"].tolist() if "attributes" in features else ["{}"] * len(features)
    for i, extra in zip(idx.tolist(), attributes):
        try:
            merged = json.loads(old[i]) if isinstance(old[i], str) and old[i] else {}
        except ValueError:
            merged = {}
        merged.update(extra)
        old[i] = json.dumps(merged, sort_keys=True, default=str)
    features["attributes"] = old
    layer.features = features
    layer.feature_defaults = defaults
    classes = [str(c) for c in (features["class"].cat.categories if isinstance(features["class"].dtype,
                                                                                pd.CategoricalDtype)
                                else dict.fromkeys(features["class"].astype(str)))]
    colours = class_colours(classes)
    present = sorted(set(features["class"].astype(str)))
    layer.edge_color_cycle = [colours[c] for c in present + [c for c in classes if c not in present]]
    layer.edge_color = "class"
    layer.text.color = _text_colours(colours)
    layer.refresh_text()
    if isinstance(layer.metadata, dict):
        layer.metadata["classes"] = classes
