"""What the Review widget reviews: the chosen image layer as a field (pixels, description, content key, project),
and, on a whole-slide scan, the region of it under review.

A scan of 40,000×40,000 pixels opens in napari as a lazy dask array (or a multiscale pyramid); its review never
reads it whole: the pixels stay lazy (the gallery cuts its thumbnails out of them one by one) and only the cells of
one region at a time are loaded into the layers, as a pathologist reviews a slide one region after another. The
region is given as pixel rows and columns (``y0:y1, x0:x1``), or taken from the view (*this view*).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core.annotations import AnnotationTable, Rows
from ...core.errors import BloodcellInputError
from ...core.review_project import Autosaver, ReviewProject, image_digest, image_key

if TYPE_CHECKING:
    from ..review_display import ReviewDisplay

Region = tuple[int, int, int, int]
"""y0, y1, x0, x1 in image pixels."""


@dataclasses.dataclass
class Field:
    layer: Any
    pixels: Any
    """A numpy array, or the lazy (dask) array of a large image: index it by region, never read it whole."""
    image: dict[str, Any]
    project: ReviewProject
    key: str
    region: Region | None = None


@dataclasses.dataclass
class Session:
    table: AnnotationTable
    display: ReviewDisplay
    saver: Autosaver
    image: dict[str, Any]
    pixels: Any
    project: ReviewProject
    key: str
    region: Region | None = None
    outside: Rows | None = None
    """The field's cells outside the region under review (saved back with it, counted at sign-off)."""


def is_lazy(pixels: Any) -> bool:
    return not isinstance(pixels, np.ndarray)


def layer_pixels(layer: Any) -> Any:
    """The layer's full-resolution pixels without reading them: numpy as it is, a dask array (a large image read
    tile by tile) kept lazy, a multiscale pyramid's finest level."""
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    return data if hasattr(data, "dask") or hasattr(data, "chunks") else np.asarray(data)


def parse_region(text: str, shape: tuple[int, ...] | None = None) -> Region | None:
    """``y0:y1, x0:x1`` (pixels) as a region clipped to the image; empty text is the whole field."""
    text = text.strip()
    if not text:
        return None
    numbers = re.findall(r"-?\d+(?:\.\d+)?", text)
    if len(numbers) != 4:
        raise BloodcellInputError(f"region {text!r}: give rows and columns as y0:y1, x0:x1 (pixels)")
    y0, y1, x0, x1 = (int(float(v)) for v in numbers)
    if shape is not None:
        y0, y1 = max(0, y0), min(int(shape[0]), y1)
        x0, x1 = max(0, x0), min(int(shape[1]), x1)
    if y1 <= y0 or x1 <= x0:
        raise BloodcellInputError(f"region {text!r} holds no pixels of the image")
    return y0, y1, x0, x1


def region_text(region: Region | None) -> str:
    return "" if region is None else f"{region[0]}:{region[1]}, {region[2]}:{region[3]}"


def view_region(viewer: Any, layer: Any) -> Region:
    """The part of the image the canvas shows now (in the image's pixels)."""
    from ..review_outlines import view_extent

    wy0, wy1, wx0, wx1 = view_extent(viewer)
    scale = np.asarray(layer.scale[-2:], dtype=float)
    offset = np.asarray(layer.translate[-2:], dtype=float)
    (y0, x0), (y1, x1) = (np.asarray([wy0, wx0]) - offset) / scale, (np.asarray([wy1, wx1]) - offset) / scale
    return int(np.floor(y0)), int(np.ceil(y1)), int(np.floor(x0)), int(np.ceil(x1))


def field_of(viewer: Any, name: str, project_folder: str, region_text_: str = "") -> Field:
    """The image layer ``name`` as a field to review: pixels (lazy when the layer is), description, content key,
    project and region."""
    if not name:
        raise BloodcellInputError("open an image first (File ▸ Open, or run Detect cells)")
    layer = viewer.layers[name]
    pixels = layer_pixels(layer)
    if pixels.ndim != (3 if layer.rgb else 2):
        raise BloodcellInputError(f"layer {name!r} is not a single 2D field (shape {tuple(pixels.shape)}); "
                                  "open one image to review it")
    path = layer.metadata.get("path") or (str(layer.source.path) if layer.source.path else None)
    path = path if path and (Path(path).is_file() or Path(path).is_dir()) else None  # a folder: OME-Zarr
    if path is None and is_lazy(pixels):
        raise BloodcellInputError(f"layer {name!r} is a lazy image without a file; open the image file to review it")
    # a folder or a file of gigabytes gets an identity digest (milliseconds), not a hash of everything on this thread
    digest = image_digest(path) if path else image_digest(array=pixels)
    file_name = Path(path).name if path else f"{name}.png"
    height, width = pixels.shape[:2]
    image = {"file_name": file_name, "width": int(width), "height": int(height), "path": path, "digest": digest}
    project = ReviewProject(Path(project_folder).expanduser())
    region = parse_region(region_text_, pixels.shape)
    if region == (0, int(height), 0, int(width)):
        region = None
    return Field(layer, pixels, image, project, image_key(file_name, digest), region)


def keep_pixels(project: ReviewProject, digest: str, pixels: np.ndarray) -> None:
    """In a thread: a failure (disk full) is not raised there; the export then names the image it left out."""
    try:
        project.keep_pixels(digest, pixels)
    except (OSError, BloodcellInputError):
        pass


def warm_imports() -> None:
    """In a thread when the widget is made: pandas (napari's layer features) takes a second to import, which the
    first review would otherwise spend opening."""
    try:
        import pandas  # noqa: F401
    except ImportError:
        pass
