"""npe2 writers: Shapes -> COCO JSON / VOC XML / YOLO txt, Points -> CSV / COCO keypoints / ``x y type`` txt,
Labels -> NIfTI (source affine) or PNG.

Writes are atomic; an existing file is never lost: napari's save dialog asks before replacing, and the previous
file is kept beside it as ``NAME.<timestamp>.bak``. A layer of several images (an image stack) written as ``.xml`` or
``.txt`` becomes a folder named after the file, with one annotation file per image.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import atomic_write_text
from ..core.errors import BloodcellInputError
from ..core.io.coco import write_coco
from ..core.io.nifti import affine_from_scale_translate, is_nifti_path, save_nifti
from ..core.io.voc import write_voc_xml
from ..core.io.yolo import write_yolo_labels
from .layers import shapes_to_annotation_set

EXIST = "backup"


class LayerNotWritten(RuntimeError):
    """Why a layer could not be saved. Not a ValueError on purpose: napari's writer lookup treats a ValueError as
    'this plugin cannot write that' and replaces our message with a generic warning."""


def _explain_failures(writer: Callable[[str, Any, dict[str, Any]], list[str]]):
    @functools.wraps(writer)
    def wrapped(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
        try:
            return writer(path, data, attributes)
        except BloodcellInputError as exc:
            raise LayerNotWritten(f"could not save {attributes.get('name', 'layer')!r} to {path}: {exc}") from exc

    return wrapped


def _images_from_viewer() -> list[dict[str, Any]] | None:
    """For a Shapes layer drawn by hand: the size and file of the one 2D image open in the viewer."""
    try:
        import napari
        from napari.layers import Image

        viewer = napari.current_viewer()
    except Exception:  # no viewer (scripts, tests): nothing to look up
        return None
    if viewer is None:
        return None
    images = [layer for layer in viewer.layers if isinstance(layer, Image) and layer.ndim == 2]
    if len(images) != 1:
        return None
    layer = images[0]
    height, width = layer.data.shape[:2]
    path = (layer.metadata or {}).get("path") or (str(layer.source.path) if layer.source.path else None)
    file_name = Path(path).name if path else f"{layer.name}.png"
    return [{"file_name": file_name, "width": int(width), "height": int(height), "path": path}]


def _write_classes(path: Path, classes: list[str]) -> Path:
    text = "\n".join(classes) + "\n"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path
    return atomic_write_text(path, text, exist=EXIST)


@_explain_failures
def write_shapes(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write a Shapes layer's boxes; the format follows the extension (.json COCO, .xml VOC, .txt YOLO)."""
    target = Path(path)
    meta = attributes.get("metadata") or {}
    images = None if meta.get("images") else _images_from_viewer()
    aset = shapes_to_annotation_set(data, attributes, images=images)
    suffix = target.suffix.lower()
    if suffix == ".json":
        return [str(write_coco(aset, target, exist=EXIST))]
    if suffix not in (".xml", ".txt"):
        raise BloodcellInputError(f"unsupported extension {suffix!r}; allowed: .json (COCO), .xml (VOC), .txt (YOLO)",
                                  target)
    several = len(aset.images) > 1
    folder = target.with_suffix("") if several else target.parent
    written = []
    for rec in aset.images:
        out = folder / f"{Path(rec.file_name).stem}{suffix}" if several else target
        if suffix == ".xml":
            written.append(write_voc_xml(rec, aset.classes, out, exist=EXIST))
        else:
            written.append(write_yolo_labels(rec, out, exist=EXIST))
    if suffix == ".txt":
        written.append(_write_classes(folder / "classes.txt", aset.classes))
    return [str(p) for p in written]


@_explain_failures
def write_labels(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write a Labels layer: NIfTI with the source affine (else scale/translate), or a 2D PNG mask."""
    target = Path(path)
    arr = np.asarray(data)
    meta = attributes.get("metadata") or {}
    if is_nifti_path(target):
        if arr.ndim != 3:
            raise BloodcellInputError(f"a NIfTI label map must be 3D; this layer has shape {arr.shape}", target)
        if meta.get("affine") is not None and list(meta.get("shape", arr.shape)) == list(arr.shape):
            affine = np.asarray(meta["affine"], dtype=np.float64)
        else:
            affine = affine_from_scale_translate(attributes.get("scale", (1, 1, 1)),
                                                 attributes.get("translate", (0, 0, 0)))
        return [str(save_nifti(arr, affine, target, is_label_map=True, exist=EXIST))]
    if target.suffix.lower() == ".png":
        if arr.ndim != 2:
            raise BloodcellInputError(f"a PNG mask must be 2D; this layer has shape {arr.shape} (save 3D as .nii.gz)",
                                      target)
        if arr.min() < 0 or arr.max() > 65535:
            raise BloodcellInputError("label values must lie in 0..65535 for PNG", target)
        from ..core.atomic import atomic_write_bytes
        from ..core.io.images import png_bytes

        mask = arr.astype(np.uint8 if arr.max() < 256 else np.uint16)
        return [str(atomic_write_bytes(target, png_bytes(mask), exist=EXIST))]
    raise BloodcellInputError(f"unsupported extension {target.suffix!r}; allowed: .nii, .nii.gz, .png", target)


@_explain_failures
def write_points(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write a Points layer: ``.csv`` (image, x, y, class), ``.json`` (COCO keypoints) or ``.txt`` (``x y type``
    with ``classes.txt`` beside it; a stack of several images becomes a folder named after the file)."""
    from ..core.io.points import write_points as write_point_set
    from ..core.io.points import xyt_text
    from .point_layers import layer_point_set

    target = Path(path)
    meta = attributes.get("metadata") or {}
    images = None if meta.get("images") else _images_from_viewer()
    pset = layer_point_set(data, attributes, images=images)
    suffix = target.suffix.lower()
    if suffix in (".csv", ".json"):
        return [str(p) for p in write_point_set(pset, target, "csv" if suffix == ".csv" else "coco", exist=EXIST)]
    if suffix not in (".txt", ""):
        raise BloodcellInputError(f"unsupported extension {suffix!r}; allowed: .csv (x,y,class), .json (COCO "
                                  "keypoints), .txt (x y type)", target)
    several = len(pset.images) > 1 or suffix == ""
    folder = target.with_suffix("") if several else target.parent
    written = []
    for rec in pset.images:
        out = folder / f"{Path(rec.file_name).stem}.txt" if several else target
        written.append(atomic_write_text(out, xyt_text(rec), exist=EXIST))
    written.append(_write_classes(folder / "classes.txt", pset.classes))
    return [str(p) for p in written]
