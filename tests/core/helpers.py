"""Tiny annotated datasets written into tmp_path for the io tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_bloodcell.core.io.images import png_bytes
from napari_bloodcell.core.io.records import AnnotationSet, ImageRecord

CLASSES = ["RBC", "WBC", "Platelets"]


def make_images(folder: Path, sizes=((64, 48), (80, 60))) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (w, h) in enumerate(sizes):
        img = np.full((h, w, 3), 200 + k, np.uint8)
        p = folder / f"img_{k}.png"
        p.write_bytes(png_bytes(img))
        paths.append(p)
    return paths


def make_set(folder: Path, with_review: bool = True) -> AnnotationSet:
    paths = make_images(folder)
    recs = [
        ImageRecord(
            file_name=paths[0].name, width=64, height=48,
            boxes=[[1, 2, 11, 22], [30, 10, 64, 48]], labels=[0, 1],
            scores=[0.9, np.nan] if with_review else None,
            sources=["model:v1", "alice"] if with_review else None,
            reviews=["unreviewed", "corrected"] if with_review else None,
            attributes=[{"truncated": 0}, {"truncated": 1, "note": "smudge"}],
            path=paths[0],
        ),
        ImageRecord(file_name=paths[1].name, width=80, height=60, boxes=[[5, 5, 9, 9]], labels=[2],
                    attributes=[{}], path=paths[1]),
    ]
    return AnnotationSet(classes=list(CLASSES), images=recs, format="test")
