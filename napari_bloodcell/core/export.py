"""Reviewed annotations -> a versioned training set that never loses or overwrites anything.

Layout of a dataset folder::

    DATASET/dataset.json                    manifest: classes, versions (who added what, from which review
                                            project, when), and which version is current
    DATASET/images/<sha256[:16]>.<ext>      every image once, named by its content
    DATASET/versions/v0003/annotations.json COCO; review state, source, who changed it last and multi-labels
                                            travel in each annotation's ``attributes``
    DATASET/versions/v0003/voc|yolo/        optional views of the same boxes
    DATASET/versions/v0003/crops/<class>/   one PNG per classified cell (+ ``crops.csv``) for classifiers

Each export builds a complete new version in a hidden staging folder, moves it into place, and only then
rewrites the manifest (atomically), so a process killed at any moment leaves the previous version current and
loadable. Versions are never changed afterwards: re-exporting an image replaces its boxes only in the new
version. Unreviewed model output is left out unless ``include_unreviewed`` is asked for, and then it stays marked
``unreviewed``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import shutil
import time
from collections.abc import Generator, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .progress import step
from .annotations import HUMAN_STATES, AnnotationTable
from .atomic import atomic_write_bytes, atomic_write_text, folder_lock, remove_stale_partials, staged_directory
from .crops import CROP_CONTEXT, cell_crops
from .errors import BloodcellInputError
from .untrusted import image_file, inside, is_hex_digest, json_text, output_name
from .io.coco import read_coco, write_coco
from .io.dataset import FORMAT, MANIFEST, is_dataset, read_manifest
from .io.images import lossless_image_bytes, png_bytes, read_image
from .io.records import AnnotationSet, ImageRecord

VIEWS = ("voc", "yolo")
EXPORTED_STATES = tuple(s for s in HUMAN_STATES if s != "rejected")
CROP_STATES = ("accepted", "corrected")
CROP_SHAPE = "square"
"""How the crops are cut (:func:`.crops.cell_crop`), recorded per version: an older version's crops (10%, not square)
are never linked into a new one."""


@dataclasses.dataclass
class ExportItem:
    """One reviewed image: its table, its description (file_name, width, height, path) and content digest."""

    table: AnnotationTable
    image: dict[str, Any]
    digest: str
    project: str | None = None
    pixels: np.ndarray | None = None
    """The image itself when it has no file (e.g. a layer made in napari)."""


@dataclasses.dataclass
class ExportResult:
    dataset: Path
    version: int
    added: list[str]
    replaced: list[str]
    images: int
    boxes: int
    crops: int
    warnings: list[str]


def items_from_project(project_dir: str | Path, keys: Iterable[str] | None = None) -> list[ExportItem]:
    """Every reviewed image of a review project (or the named ones)."""
    from .review_project import ReviewProject

    project = ReviewProject(project_dir, create=False)
    wanted = set(keys) if keys is not None else None
    items = []
    for key, table, image in project.load_all():
        if wanted is None or key in wanted:
            digest = image.get("digest") or key.rsplit("-", 1)[-1]
            if not is_hex_digest(digest):  # it names the dataset's image file: never a path
                raise BloodcellInputError(f"image digest {str(digest)[:40]!r} is not a hexadecimal content hash",
                                          project.sidecar(key))
            on_disk = image_file(image["path"]) if isinstance(image.get("path"), str) and image["path"] else None
            if on_disk is None and project.kept_image(digest) is not None:
                image = dict(image, path=str(project.kept_image(digest)))  # an in-memory image kept by the review
            items.append(ExportItem(table, image, digest, project=str(project.folder.resolve())))
    if wanted is not None and len(items) != len(wanted):
        missing = wanted - {image_key_of(i) for i in items}
        raise BloodcellInputError(f"no review for {sorted(missing)}; reviewed images: {project.keys()}", project_dir)
    if not items:
        raise BloodcellInputError("holds no reviewed images yet", project_dir)
    return items


def image_key_of(item: ExportItem) -> str:
    from .review_project import image_key

    return image_key(item.image["file_name"], item.digest)


def export_dataset(
    items: list[ExportItem], dataset: str | Path, by: str, *, views: Iterable[str] = (), crops: bool = True,
    crop_margin: float = CROP_CONTEXT, include_unreviewed: bool = False, note: str = "",
) -> Generator[tuple[int, int], None, ExportResult]:
    """Add the reviewed images to ``dataset`` as a new version; yields (done, total) images."""
    views = list(views)
    bad = [v for v in views if v not in VIEWS]
    if bad:
        raise BloodcellInputError(f"unknown export view(s) {bad}; allowed: {', '.join(VIEWS)} (COCO is always written)")
    if not items:
        raise BloodcellInputError("nothing to export: no reviewed images were given")
    if not by.strip():
        raise BloodcellInputError("an export needs the name of the person making it")
    dataset = Path(dataset).resolve()
    if dataset.exists() and not dataset.is_dir():
        raise BloodcellInputError("is a file; a dataset is a folder (choose a new or empty folder)", dataset)
    if dataset.exists() and not is_dataset(dataset) and any(dataset.iterdir()):
        raise BloodcellInputError("exists and is not a napari-bloodcell dataset; choose a new or empty folder", dataset)
    states = EXPORTED_STATES + (("unreviewed",) if include_unreviewed else ())
    with folder_lock(dataset, "this dataset"):
        remove_stale_partials(dataset, ("", "images", "versions"))
        manifest = read_manifest(dataset) if is_dataset(dataset) else {
            "format": FORMAT, "created": _now(), "classes": [], "current": None, "versions": []}
        if manifest.get("kind", "boxes") != "boxes":
            raise BloodcellInputError("is a segmentation dataset; export boxes into a box dataset", dataset)
        previous = _current_records(dataset, manifest)
        classes = list(manifest["classes"])
        for item in items:
            classes += [c for c in item.table.classes if c not in classes]
        version = _next_version(dataset, manifest)
        records: dict[str, ImageRecord] = {digest: _relabel(rec, prev_classes, classes)
                                           for digest, (rec, prev_classes) in previous.items()}
        added, replaced, warnings = [], [], []
        usable = [i for i in items if _has_image(i)]
        for item in items:
            if not _has_image(item):  # one missing image must not block the export of every other one
                warnings.append(f"{item.image.get('file_name')}: left out: its image is neither a readable image file "
                                f"({item.image.get('path')}) nor kept in memory or in its review project")
        if not usable:
            raise BloodcellInputError(f"nothing to export: {'; '.join(warnings)}")
        items = usable
        new_records: dict[str, ImageRecord] = {}
        total = len(items)
        for k, item in enumerate(items):
            rec, warning = _item_record(item, dataset, classes, states)
            if warning:
                warnings.append(warning)
            (replaced if item.digest in records else added).append(item.digest)
            records[item.digest] = new_records[item.digest] = rec
            yield step(k, total)
        ordered = [records[d] for d in sorted(records)]
        aset = AnnotationSet(classes, ordered, format="coco", extra={"info": {
            "description": f"napari-bloodcell dataset {dataset.name}, version {version}", "version": str(version),
            "date_created": _now()}})
        rel = f"versions/v{version:04d}"
        n_crops = 0
        with staged_directory(dataset / rel) as stage:
            names = [os.path.relpath(r.path, dataset / rel) for r in ordered]
            write_coco(aset, stage / "annotations.json", file_names=names)
            for view in views:
                _write_view(aset, stage / view, view)
            if crops:
                n_crops = _write_crops(ordered, classes, stage / "crops", crop_margin, set(new_records),
                                       _previous_crops_dir(dataset, manifest, crop_margin))
            atomic_write_text(stage / "README.txt", _version_readme(version, by, items, include_unreviewed))
        entry = {
            "version": version, "path": rel, "created": _now(), "by": by, "note": note,
            "projects": sorted({i.project for i in items if i.project}), "added": added, "replaced": replaced,
            "images": len(ordered), "boxes": aset.n_boxes, "counts": aset.class_counts(), "crops": n_crops,
            "crop_margin": crop_margin if crops else None, "crop_shape": CROP_SHAPE if crops else None,
            "views": ["coco", *views],
            "include_unreviewed": include_unreviewed, "parent": manifest.get("current"), "warnings": warnings,
        }
        manifest.update(classes=classes, current=version, versions=[*manifest["versions"], entry])
        atomic_write_text(dataset / MANIFEST, json_text(manifest, indent=1) + "\n", exist="replace")
    yield step(total, total)
    return ExportResult(dataset, version, added, replaced, len(ordered), aset.n_boxes, n_crops, warnings)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _next_version(dataset: Path, manifest: dict[str, Any]) -> int:
    """One past every version the manifest or the folder knows (a folder left by a killed export is skipped)."""
    known = [v["version"] for v in manifest["versions"]]
    on_disk = [int(m.group(1)) for p in (dataset / "versions").glob("v*") if (m := re.fullmatch(r"v(\d+)", p.name))]
    return max(known + on_disk + [0]) + 1


def _previous_version_dir(dataset: Path, manifest: dict[str, Any]) -> Path | None:
    current = manifest.get("current")
    entry = next((v for v in manifest["versions"] if v["version"] == current), None)
    return dataset / entry["path"] if entry else None


def _previous_crops_dir(dataset: Path, manifest: dict[str, Any], margin: float) -> Path | None:
    """The current version's folder when its crops were cut as this export cuts them (square, same context), so
    its crops of unchanged images can be linked; None otherwise (an older export's crops are cut again)."""
    current = manifest.get("current")
    entry = next((v for v in manifest["versions"] if v["version"] == current), None)
    if not entry or entry.get("crop_shape") != CROP_SHAPE or entry.get("crop_margin") != margin:
        return None
    return dataset / entry["path"]


def _current_records(dataset: Path, manifest: dict[str, Any]) -> dict[str, tuple[ImageRecord, list[str]]]:
    folder = _previous_version_dir(dataset, manifest)
    if folder is None:
        return {}
    aset = read_coco(folder / "annotations.json")
    out = {}
    for rec in aset.images:
        if rec.path is None:
            raise BloodcellInputError(f"image {rec.file_name} of the current version is missing from images/", dataset)
        out[rec.path.stem] = (rec, aset.classes)
    return out


def _has_image(item: ExportItem) -> bool:
    path = item.image.get("path")
    return item.pixels is not None or (isinstance(path, str) and bool(path) and image_file(path) is not None)


def _relabel(rec: ImageRecord, old: list[str], new: list[str]) -> ImageRecord:
    mapping = np.asarray([new.index(c) for c in old], dtype=np.int64)
    return dataclasses.replace(rec, labels=mapping[rec.labels] if len(rec) else rec.labels)


def _item_record(item: ExportItem, dataset: Path, classes: list[str], states: tuple[str, ...]
                 ) -> tuple[ImageRecord, str | None]:
    """Copy the image in (once, by content) and take the boxes in the exported review states."""
    image = item.image
    if not is_hex_digest(item.digest):
        raise BloodcellInputError(f"image digest {str(item.digest)[:40]!r} of {image.get('file_name')!r} is not a "
                                  "hexadecimal content hash")
    src = image_file(image["path"]) if isinstance(image.get("path"), str) and image["path"] else None
    if src is not None:
        target = inside(dataset / "images", f"{item.digest}{src.suffix.lower()}")
        if not target.exists():
            atomic_write_bytes(target, src.read_bytes())
    elif item.pixels is not None:  # an image made in napari: its pixels, losslessly
        data, suffix = lossless_image_bytes(np.asarray(item.pixels))
        target = inside(dataset / "images", f"{item.digest}{suffix}")
        if not target.exists():
            atomic_write_bytes(target, data)
    else:
        raise BloodcellInputError(f"the image of {image['file_name']} is neither a readable image on disk "
                                  f"({image.get('path')}) nor in memory")
    rec = item.table.to_record(image["file_name"], int(image["width"]), int(image["height"]), path=target,
                               include=states)
    mapping = np.asarray([classes.index(c) for c in item.table.classes], dtype=np.int64)
    rec = dataclasses.replace(rec, labels=mapping[rec.labels] if len(rec) else rec.labels,
                              extra={"original_file_name": image["file_name"], "review_project": item.project,
                                     "signed": item.table.signed if item.table.signature_valid else None})
    left = int((item.table.col("review") == "unreviewed").sum()) if "unreviewed" not in states else 0
    warning = (f"{image['file_name']}: {left} unreviewed model box(es) left out; the image is only partly "
               "annotated until they are reviewed") if left else None
    return rec, warning


def view_set(aset: AnnotationSet, view: str) -> AnnotationSet:
    """What a VOC or YOLO view holds, in the form other tools read.

    A not-classed box (an artefact, smudge or unidentifiable cell) is not an example of its old class: VOC keeps it
    as ``difficult``, which VOC trainers and evaluators ignore, and YOLO, which has no such flag, leaves it out.
    YOLO labels are the plain five columns (``class cx cy w h``): a sixth score column is read as a polygon or an
    error by most YOLO tools, and reviewed boxes have no model score to keep anyway."""
    records = []
    for rec in aset.images:
        artefact = np.asarray([r == "not_classed" for r in rec.review_list()], dtype=bool)
        if view == "yolo":
            rec = dataclasses.replace(rec.subset(~artefact), scores=None)
        elif artefact.any():
            attributes = [dict(a, difficult=1) if flag else a for a, flag in zip(rec.attribute_list(), artefact)]
            rec = dataclasses.replace(rec, attributes=attributes)
        records.append(rec)
    return dataclasses.replace(aset, images=records)


def _write_view(aset: AnnotationSet, folder: Path, view: str) -> None:
    from .convert import convert_annotations
    from .progress import drain

    drain(convert_annotations(view_set(aset, view), folder, to=view, images="copy" if view == "yolo" else "reference"))


def _write_crops(records: list[ImageRecord], classes: list[str], folder: Path, margin: float, fresh: set[str],
                 previous: Path | None) -> int:
    """One PNG per accepted or corrected cell, in a folder per class; unchanged images' crops are hard links to
    the previous version's files (no copy, no change to them)."""
    rows = []
    for rec in records:
        digest = rec.path.stem
        attrs, reviews = rec.attribute_list(), rec.review_list()
        cut: dict[int, np.ndarray] | None = None
        for i in range(len(rec)):
            if reviews[i] not in CROP_STATES:
                continue
            name = classes[int(rec.labels[i])]
            rel = Path(_safe(name)) / output_name(f"{digest}_{attrs[i].get('object_id', i)}.png")
            target = inside(folder, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            old = previous / "crops" / rel if previous is not None else None
            if digest not in fresh and old is not None and old.is_file():
                _link_or_copy(old, target)
            else:
                if cut is None:  # every crop of the field at once: it is read and its range found once
                    chosen = [k for k in range(len(rec)) if reviews[k] in CROP_STATES]
                    cut = dict(zip(chosen, cell_crops(read_image(rec.path), rec.boxes[chosen], margin)))
                atomic_write_bytes(target, png_bytes(cut[i]))
            rows.append([rel.as_posix(), name, rec.extra.get("original_file_name", rec.file_name), digest,
                         attrs[i].get("object_id", i), ";".join(attrs[i].get("labels", [])), reviews[i],
                         (rec.sources or [""] * len(rec))[i], attrs[i].get("changed_by", "")])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["crop", "class", "image", "image_digest", "object_id", "labels", "review", "source", "changed_by"])
    writer.writerows(rows)
    atomic_write_text(folder / "crops.csv", buffer.getvalue())
    return len(rows)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _safe(name: str) -> str:
    """A folder name for a class: letters, digits and ``_.-`` only, never ``.``/``..`` (a class named ``..`` must
    not put its crops beside ``crops/``)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return "class" if not safe.strip(".") else safe


def _version_readme(version: int, by: str, items: list[ExportItem], unreviewed: bool) -> str:
    lines = [f"napari-bloodcell dataset version {version}", f"exported by {by} on {_now()}",
             f"unreviewed model boxes included: {'yes (marked review=unreviewed)' if unreviewed else 'no'}", "",
             "images in this export:"]
    lines += [f"  {i.image['file_name']} ({i.digest})" for i in items]
    return "\n".join(lines) + "\n"
