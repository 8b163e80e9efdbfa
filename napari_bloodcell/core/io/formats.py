"""Which annotation format a path holds, and reading any of them through one call."""

from __future__ import annotations

from pathlib import Path

from ..errors import BloodcellInputError
from .box_csv import looks_like_box_csv, read_box_csv
from .coco import looks_like_coco, read_coco
from .dataset import dataset_coco_path, is_dataset
from .records import AnnotationSet
from .voc import is_voc_dir, is_voc_xml, read_voc
from .yolo import read_yolo, yolo_root

COCO_FILE_NAMES = ("annotations.json", "_annotations.coco.json", "instances.json")
SUFFIX_FORMATS = {".json": "coco", ".xml": "voc", ".csv": "csv"}


def _coco_in_dir(path: Path) -> Path | None:
    return next((path / n for n in COCO_FILE_NAMES if (path / n).is_file()), None)


def detect_annotation_format(path: str | Path) -> str | None:
    """``voc``, ``coco``, ``yolo`` or ``csv`` for a path that holds box annotations, else None (never raises)."""
    path = Path(path)
    try:
        if path.is_dir():
            if is_dataset(path):
                return "dataset"
            if is_voc_dir(path):
                return "voc"
            if yolo_root(path) is not None:
                return "yolo"
            if _coco_in_dir(path) is not None:
                return "coco"
            return None
        suffix = path.suffix.lower()
        if suffix == ".xml":
            return "voc" if is_voc_xml(path) else None
        if suffix == ".json":
            return "coco" if looks_like_coco(path) else None
        if suffix in (".yaml", ".yml", ".txt"):
            return "yolo" if yolo_root(path) is not None else None
        if suffix == ".csv":
            return "csv" if looks_like_box_csv(path) else None
    except OSError:
        return None
    return None


def claimed_annotation_format(path: str | Path) -> str | None:
    """The format to parse a path the user named explicitly with: the sniffed one, else the one its suffix claims.

    Parsing by suffix when the cheap sniffing said no makes the error say what is wrong inside the file (malformed
    JSON, a root element that is not <annotation>, missing columns) instead of "not recognised".
    """
    path = Path(path)
    return detect_annotation_format(path) or (None if path.is_dir() else SUFFIX_FORMATS.get(path.suffix.lower()))


def read_annotations(path: str | Path, fmt: str | None = None) -> AnnotationSet:
    """Read box annotations of any supported format; a clear error when the path is none of them."""
    path = Path(path)
    if not path.exists():
        raise BloodcellInputError("no such file or folder", path)
    fmt = fmt or claimed_annotation_format(path)
    if fmt == "dataset":
        return read_coco(dataset_coco_path(path))
    if fmt == "voc":
        return read_voc(path)
    if fmt == "coco":
        return read_coco(_coco_in_dir(path) if path.is_dir() else path)
    if fmt == "yolo":
        return read_yolo(path)
    if fmt == "csv":
        return read_box_csv(path)
    raise BloodcellInputError(
        "is not a recognised annotation set; allowed: a napari-bloodcell dataset folder (dataset.json), a VOC XML file or folder with Annotations/, a COCO .json, "
        "a YOLO folder (images/ + labels/), its data.yaml or a labels/*.txt, or a CSV with image,xmin,ymin,xmax,"
        "ymax,label columns",
        path,
    )
