"""npe2 reader: smear images, whole-slide pyramids (pyramidal TIFF / OME-TIFF, OME-Zarr folders), NIfTI volumes,
box annotations (VOC, COCO, YOLO, CSV) and point annotations.

A pyramid opens as one multiscale Image layer (a list of lazy dask arrays, full resolution first): napari reads
only the tiles of the level it shows.

Point files share suffixes with box files (``.txt`` YOLO, ``.csv``, ``.json`` COCO), so the box formats are asked
first; a path they refuse is points when it looks like one (an ``x y type`` first line, ``x,y,class`` columns,
COCO keypoints, a folder of such ``.txt`` files or a Chula-style ``Label/`` + ``Dataset/`` folder). A COCO file
whose annotations hold keypoints and no ``bbox`` is points even though it looks like COCO boxes.

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
from ..core.io.pyramid import is_pyramid_path
from ..core.untrusted import is_regular_file
from .layers import (
    LayerDataTuple,
    annotation_layers,
    image_file_layer,
    image_layer,
    present_values,
    volume_layers,
)


def _kind(path: Path) -> str | None:
    if path.is_file() and is_nifti_path(path):
        return "nifti"
    if is_pyramid_path(path):
        return "pyramid"
    if is_image_path(path) and path.exists() and not path.is_dir():
        return "image"  # a FIFO named x.png is ours too: its reader refuses it (never blocks on it)
    if _keypoints_only(path):
        return "points"
    if detect_annotation_format(path) is not None:
        return "annotations"
    if _looks_like_points(path):
        return "points"
    return None


def _head(path: Path, size: int = 65536) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read(size)


def _keypoints_only(path: Path) -> bool:
    """A COCO .json with keypoints and no boxes in its first megabyte (what ``write_points`` makes)."""
    if path.suffix.lower() != ".json" or not is_regular_file(path):
        return False
    head = _head(path, 1 << 20)
    return '"keypoints"' in head and '"bbox"' not in head and '"images"' in head


def _xyt_line(path: Path) -> bool:
    """The first non-empty line of a text file reads as ``x y type`` (two numbers and a whole number)."""
    if not is_regular_file(path):
        return False
    for line in _head(path).splitlines()[:50]:
        parts = line.replace(",", " ").split()
        if not parts:
            continue
        try:
            float(parts[0]), float(parts[1]), int(parts[2])
        except (ValueError, IndexError):
            return False
        return len(parts) == 3
    return False


def _looks_like_points(path: Path) -> bool:
    """Cheap: the layout :func:`points_format` names, and for text files a first line of ``x y type``."""
    from ..core.io.points import points_format

    fmt = points_format(path)
    if fmt != "xyt":
        return fmt is not None
    if not path.is_dir():
        return _xyt_line(path)
    labels = path / "Label" if (path / "Label").is_dir() else path
    first = next((f for f in sorted(labels.glob("*.txt"))[:20] if f.name != "classes.txt" and f.stat().st_size), None)
    return first is not None and _xyt_line(first)


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
    if kind == "pyramid":
        return [pyramid_layer(path)]
    if kind == "image":
        return [image_file_layer(path)]
    if kind == "annotations":
        aset = read_annotations(path)
        name = path.name if path.is_dir() else path.stem
        if path.suffix.lower() in (".yaml", ".yml") or path.name in COCO_FILE_NAMES:
            name = path.parent.name  # data.yaml / annotations.json: the dataset folder names it
        return annotation_layers(aset, name=name, source=str(path))
    if kind == "points":
        from ..core.io.points import read_points
        from .point_layers import point_layers

        pset = read_points(path)
        name = path.name if path.is_dir() else path.stem
        if path.is_dir() and path.name == "Label":
            name = path.parent.name
        return point_layers(pset, name=name, source=str(path))
    from ..core.errors import BloodcellInputError

    raise BloodcellInputError("is not an image, NIfTI volume, annotation set or point file", path)


def pyramid_stem(path: Path) -> str:
    """``slide`` for ``slide.ome.tif``, ``slide.ome.zarr`` and ``slide.zarr``."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", ".zarr", ".tiff", ".tif"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return path.stem


def pyramid_layer(path: Path) -> LayerDataTuple:
    """A pyramid as a multiscale Image layer; contrast (16-bit) is set from the smallest level, never level 0."""
    from ..core.io.pyramid import open_pyramid

    pyramid = open_pyramid(path)
    try:
        levels = pyramid.dask_levels()
        _, kwargs, kind = image_layer(levels[-1], name=pyramid_stem(path), path=path)
    except BaseException:
        pyramid.close()
        raise
    kwargs["rgb"] = len(pyramid.shape) == 3
    kwargs["multiscale"] = True
    # The slide stays open on success: napari reads tiles through the dask levels whenever it shows a region, and
    # a TIFF's levels read through the one file handle the Pyramid holds (closing it here would break every later
    # read). The levels keep that handle alive exactly as long as the layer's data lives; OME-Zarr holds none.
    return levels, kwargs, kind
