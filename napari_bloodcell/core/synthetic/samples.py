"""Writing synthetic samples with their ground truth (``bloodcell sample`` and the shipped ``sample_data/``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..progress import step
from ..atomic import atomic_write_bytes, atomic_write_text, staged_directory
from ..io.coco import write_coco
from ..io.images import png_bytes
from ..io.nifti import save_nifti
from ..io.records import AnnotationSet, ImageRecord
from ..io.voc import write_voc_xml
from .mri import MRI_LABELS, generate_head
from .smear import (
    SMEAR_CLASSES,
    SUPERCATEGORY,
    WBC_TYPES,
    SyntheticSmear,
    generate_smear,
)

SAMPLE_KINDS = ("smear", "mri")


def smear_file_name(index: int) -> str:
    return f"smear_{index:04d}.png"


def sample_smear(index: int = 0, seed: int = 0) -> SyntheticSmear:
    """Sample ``index`` of a series: the first shows all four white-cell types, later ones a realistic draw."""
    return generate_smear(seed=seed + index, wbc_types=list(WBC_TYPES) if index == 0 else None)


def smear_record(smear: SyntheticSmear, file_name: str, path: Path | None = None) -> ImageRecord:
    """Ground truth of a synthetic smear as an annotation record (source ``synthetic``, state accepted)."""
    n = len(smear.boxes)
    return ImageRecord(
        file_name=file_name,
        width=smear.image.shape[1],
        height=smear.image.shape[0],
        boxes=smear.boxes,
        labels=smear.labels,
        sources=["synthetic"] * n,
        reviews=["accepted"] * n,
        attributes=[{"truncated": int(t), "difficult": 0} for t in smear.truncated],
        path=path,
    )


def smear_annotation_set(records: list[ImageRecord]) -> AnnotationSet:
    return AnnotationSet(
        classes=list(SMEAR_CLASSES),
        images=records,
        format="synthetic",
        extra={"supercategories": [SUPERCATEGORY[c] for c in SMEAR_CLASSES],
               "info": {"description": "napari-bloodcell synthetic smears", "version": "1"}},
    )


def _write_smears(stage: Path, seed: int, count: int) -> Iterator[tuple[int, int]]:
    records = []
    for i in range(count):
        smear = sample_smear(i, seed)
        name = smear_file_name(i)
        atomic_write_bytes(stage / "JPEGImages" / name, png_bytes(smear.image))
        atomic_write_bytes(stage / "masks" / name, png_bytes(smear.instance_mask.astype(np.uint16)))
        record = smear_record(smear, name)
        write_voc_xml(record, list(SMEAR_CLASSES), stage / "Annotations" / f"{Path(name).stem}.xml")
        records.append(record)
        yield step(i + 1, count)
    write_coco(smear_annotation_set(records), stage / "annotations.json",
               file_names=[f"JPEGImages/{r.file_name}" for r in records])
    atomic_write_text(stage / "classes.txt", "\n".join(SMEAR_CLASSES) + "\n")


def _write_heads(stage: Path, seed: int, count: int) -> Iterator[tuple[int, int]]:
    for i in range(count):
        head = generate_head(seed=seed + i)
        save_nifti(head.image, head.affine, stage / f"synthetic_t1_{i:03d}.nii.gz")
        save_nifti(head.labels, head.affine, stage / f"synthetic_t1_{i:03d}_labels.nii.gz", is_label_map=True)
        yield step(i + 1, count)
    atomic_write_text(stage / "labels.json", json.dumps({str(k): v for k, v in MRI_LABELS.items()}, indent=1) + "\n")


def write_samples(kind: str, out: str | Path, seed: int = 0, count: int = 1) -> Iterator[tuple[int, int]]:
    """Write ``count`` synthetic samples of ``kind`` into the new folder ``out``; yields (done, total).

    Smears: ``JPEGImages/*.png`` with ``Annotations/*.xml`` (VOC), ``annotations.json`` (COCO), ``classes.txt``
    and ``masks/*.png`` (instance ids). MRI: ``synthetic_t1_NNN.nii.gz`` with ``*_labels.nii.gz`` and
    ``labels.json``. Sample ``i`` uses seed ``seed + i``, so any one can be regenerated alone.
    """
    from ..errors import BloodcellInputError, nearest

    if kind not in SAMPLE_KINDS:
        raise BloodcellInputError(f"unknown sample kind {kind!r}{nearest(kind, SAMPLE_KINDS)}; allowed: smear, mri")
    if count < 1:
        raise BloodcellInputError(f"--count must be at least 1; got {count}")
    with staged_directory(out) as stage:
        writer = _write_smears if kind == "smear" else _write_heads
        yield from writer(stage, seed, count)
