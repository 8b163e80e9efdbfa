"""Tiny synthetic cell sets for the classification tests: coloured-disc crops, and smear fields whose white
cells carry their types (the project's own smear renderer), written into tmp_path."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from napari_bloodcell.core.io.coco import write_coco
from napari_bloodcell.core.io.images import png_bytes
from napari_bloodcell.core.synthetic.samples import smear_annotation_set, smear_record
from napari_bloodcell.core.synthetic.smear import WBC_TYPES, generate_smear

COLOURS = {"red": (200, 40, 40), "blue": (40, 40, 200), "green": (40, 170, 40)}


def disc_crops(folder: Path, per_class: int = 8, size: int = 40, seed: int = 0, flags: bool = False) -> Path:
    """``folder/<colour>/*.png`` discs on a pale background; with ``flags`` also a crops.csv whose multi-label
    flags are 'warm' (red) and 'large' (radius over 13 px), as the export would write them."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, rgb in COLOURS.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = np.full((size, size, 3), 230, np.uint8)
            yy, xx = np.mgrid[:size, :size]
            r = int(rng.integers(8, 18))
            img[(yy - size // 2) ** 2 + (xx - size // 2) ** 2 < r * r] = rgb
            img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
            rel = f"{name}/{name}_{i:02d}.png"
            (folder / rel).write_bytes(png_bytes(img))
            labels = [f for f, on in (("warm", name == "red"), ("large", r > 13)) if on]
            rows.append([rel, name, f"img{name}{i}", i, ";".join(labels), "accepted"])
    if flags:
        with open(folder / "crops.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["crop", "class", "image_digest", "object_id", "labels", "review"])
            w.writerows(rows)
    return folder


def wbc_fields(folder: Path, n: int = 6, seed: int = 0, width: int = 480, height: int = 360) -> Path:
    """``n`` smear fields, each with one white cell of every type; returns the COCO file (RBC, the four types,
    Platelets)."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        smear = generate_smear(seed + i, width, height, n_rbc=8, wbc_types=list(WBC_TYPES), n_platelets=2)
        path = folder / f"field_{i:02d}.png"
        path.write_bytes(png_bytes(smear.image))
        records.append(smear_record(smear, path.name, path))
    out = folder / "annotations.json"
    write_coco(smear_annotation_set(records), out)
    return out


def exported_fields(folder: Path, n: int = 4, by: str = "dr.test") -> Path:
    """``n`` synthetic smear fields (:func:`wbc_fields`, written under ``folder/fields``), every box reviewed and
    exported as version 1 of the box dataset ``folder/dataset`` (no crops), as the review's export writes one."""
    from napari_bloodcell.core.annotations import AnnotationTable
    from napari_bloodcell.core.export import ExportItem, export_dataset
    from napari_bloodcell.core.io.formats import read_annotations
    from napari_bloodcell.core.progress import drain
    from napari_bloodcell.core.review_project import image_digest

    truth = read_annotations(wbc_fields(folder / "fields", n=n))
    items = [ExportItem(AnnotationTable.from_record(rec, truth.classes),
                        {"file_name": rec.file_name, "width": rec.width, "height": rec.height, "path": str(rec.path)},
                        image_digest(rec.path)) for rec in truth.images]
    drain(export_dataset(items, folder / "dataset", by=by, crops=False))
    return folder / "dataset"
