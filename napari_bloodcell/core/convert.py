"""Write an annotation set as a self-contained COCO, VOC or YOLO dataset folder (``bloodcell convert``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Literal

from .progress import step
from .atomic import atomic_write_text, staged_directory
from .errors import BloodcellInputError, nearest
from .io.images import is_image_path
from .io.coco import write_coco
from .io.records import AnnotationSet, ImageRecord
from .io.voc import write_voc_xml
from .io.yolo import data_yaml_text, write_yolo_labels
from .untrusted import class_name, image_file, inside, output_name, safe_relative

TARGET_FORMATS = ("coco", "voc", "yolo")
ImageMode = Literal["copy", "reference"]


def _image_names(aset: AnnotationSet, flat: bool) -> list[str]:
    """Output names for the images, derived from (never trusting) the names the annotation file gives: the base
    name for formats with one flat folder, else the relative name with ``..`` and roots dropped."""
    names = [output_name(r.file_name, f"image_{k + 1}") if flat or Path(r.file_name).is_absolute()
             else safe_relative(r.file_name, f"image_{k + 1}") for k, r in enumerate(aset.images)]
    names = [n if is_image_path(n) else f"{n}{_suffix(r)}" for n, r in zip(names, aset.images)]
    seen: dict[str, str] = {}
    key = (lambda n: Path(n).with_suffix("").as_posix().lower()) if flat else (lambda n: n.lower())
    for rec, name in zip(aset.images, names):
        if key(name) in seen:
            raise BloodcellInputError(
                f"two images would share the output name {name!r} ({seen[key(name)]} and {rec.file_name})"
            )
        seen[key(name)] = rec.file_name
    return names


def _suffix(rec: ImageRecord) -> str:
    return rec.path.suffix.lower() if rec.path is not None and is_image_path(rec.path) else ".png"


def _require_image(rec: ImageRecord) -> Path:
    """The record's image file, checked again at copy time: only a readable image is ever copied."""
    if rec.path is None:
        raise BloodcellInputError(f"image {rec.file_name!r} was not found on disk, so it cannot be copied "
                                  "(use --images reference for COCO/VOC, or put the image where the annotations say)")
    if image_file(rec.path) is None:
        raise BloodcellInputError("is not a readable image; refusing to copy it into the dataset", rec.path)
    return rec.path


def check_class_names(classes: list[str]) -> None:
    """Class names become lines of classes.txt and folder names: refuse the ones that would break them."""
    for name in classes:
        class_name(name, None)


def convert_annotations(
    aset: AnnotationSet, out: str | Path, to: str, images: ImageMode = "copy"
) -> Iterator[tuple[int, int]]:
    """Write ``aset`` as a ``to`` dataset in the new folder ``out``; yields (done, total) images as it goes.

    The whole folder is built aside and moved into place at the end, so an error leaves nothing half-written;
    ``out`` must not exist or be empty. ``images="reference"`` writes only annotations that point at the original
    images (COCO relative ``file_name``, VOC ``<path>``); YOLO needs its images beside the labels, so it copies.
    """
    if to not in TARGET_FORMATS:
        raise BloodcellInputError(f"unknown target format {to!r}{nearest(to, TARGET_FORMATS)}; allowed: "
                                  f"{', '.join(TARGET_FORMATS)}")
    if images not in ("copy", "reference"):
        raise BloodcellInputError(f"unknown image mode {images!r}; allowed: copy, reference")
    if to == "yolo" and images == "reference":
        raise BloodcellInputError("YOLO finds images beside labels/, so it cannot reference them; use --images copy")
    out = Path(out).resolve()
    check_class_names(aset.classes)
    names = _image_names(aset, flat=to != "coco")
    total = len(aset.images)
    with staged_directory(out) as stage:
        image_dir = stage / {"coco": "images", "voc": "JPEGImages", "yolo": "images"}[to]
        written_names = []
        for k, (rec, name) in enumerate(zip(aset.images, names)):
            if images == "copy":
                target = inside(image_dir, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(_require_image(rec), target)
                written_names.append(f"images/{name}" if to == "coco" else name)
            else:
                src = rec.path.resolve() if rec.path is not None else None
                written_names.append(os.path.relpath(src, out) if src is not None else rec.file_name)
            if to == "voc":
                voc_rec = replace(rec, file_name=Path(name).name,
                                  path=rec.path.resolve() if images == "reference" and rec.path else None)
                write_voc_xml(voc_rec, aset.classes, inside(stage / "Annotations", f"{Path(name).stem}.xml"))
            elif to == "yolo":
                write_yolo_labels(rec, inside(stage / "labels", Path(name).with_suffix(".txt")))
            yield step(k + 1, total)
        if to == "coco":
            write_coco(aset, stage / "annotations.json", file_names=written_names)
        else:
            atomic_write_text(stage / "classes.txt", "\n".join(aset.classes) + "\n")
        if to == "yolo":
            atomic_write_text(stage / "data.yaml", data_yaml_text(aset.classes))
