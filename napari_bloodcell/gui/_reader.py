"""npe2 reader: smear images, NIfTI volumes and box annotations (VOC, COCO, YOLO, CSV).

``get_reader`` answers None for paths this plugin does not handle and never raises; a file that is ours but
broken raises a clear error from the returned reader, which napari shows as a notification.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..core.io.formats import (
    COCO_FILE_NAMES,
    detect_annotation_format,
    read_annotations,
)
from ..core.io.images import is_image_path
from ..core.io.nifti import is_nifti_path, load_nifti, nifti_stem
from .layers import LayerDataTuple, annotation_layers, image_file_layer, present_values, volume_layers


def _kind(path: Path) -> str | None:
    if path.is_file() and is_nifti_path(path):
        return "nifti"
    if is_image_path(path) and path.exists() and not path.is_dir():
        return "image"  # a FIFO named x.png is ours too: its reader refuses it (never blocks on it)
    if detect_annotation_format(path) is not None:
        return "annotations"
    return None


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerDataTuple]] | None:
    try:
        paths = [Path(p) for p in (path if isinstance(path, list) else [path])]
        if not paths or any(_kind(p) is None for p in paths):
            return None
    except Exception:  # the reader contract: never raise while choosing
        return None
    return read_paths


def read_paths(path: str | list[str]) -> list[LayerDataTuple]:
    layers: list[LayerDataTuple] = []
    for p in [Path(x) for x in (path if isinstance(path, list) else [path])]:
        layers.extend(read_one(p))
    return layers


def read_one(path: Path) -> list[LayerDataTuple]:
    kind = _kind(path)
    if kind == "nifti":
        vol = load_nifti(path)
        name = nifti_stem(path)
        if vol.is_label_map and "label" not in name.lower():
            name = f"{name} labels"
        names = None
        if vol.is_label_map:
            from ..core.io.label_names import find_label_names

            names = find_label_names(path, vol.intent_name, present_values(vol.data) if vol.intent_name else None)
        return volume_layers(vol, name=name, label_names=names)
    if kind == "image":
        return [image_file_layer(path)]
    if kind == "annotations":
        aset = read_annotations(path)
        name = path.name if path.is_dir() else path.stem
        if path.suffix.lower() in (".yaml", ".yml") or path.name in COCO_FILE_NAMES:
            name = path.parent.name  # data.yaml / annotations.json: the dataset folder names it
        return annotation_layers(aset, name=name, source=str(path))
    from ..core.errors import BloodcellInputError

    raise BloodcellInputError("is not an image, NIfTI volume or annotation set", path)
