"""Torch datasets over annotated smears, box-aware augmentation, a stable validation split, imbalance weights.

Augmentation uses ``torchvision.transforms.v2`` so boxes follow every geometric change: horizontal and vertical
flips (a smear has no up or left), the colour jitter of the seed papers (hue, brightness, saturation, contrast:
stains and lamps vary between labs), and a random scale/shift (cells vary with magnification); boxes pushed out
of the field are clipped or dropped (``SanitizeBoundingBoxes``).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..errors import BloodcellInputError
from ..io.records import AnnotationSet, ImageRecord


def train_transforms(scale: tuple[float, float] = (0.8, 1.2)):
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomHorizontalFlip(0.5),
        v2.RandomVerticalFlip(0.5),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05),
        v2.RandomApply([v2.RandomAffine(degrees=0.0, translate=(0.05, 0.05), scale=scale)], p=0.5),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=2.0),
    ])


class DetectionDataset(torch.utils.data.Dataset):
    """``(image float CHW 0..1, {"boxes": float32 (N,4) xyxy, "labels": int64 (N,)})`` per image."""

    def __init__(self, records: list[ImageRecord], augment: bool | str = False) -> None:
        """``augment``: False, True or ``"basic"`` (flips, mild colour and scale), or ``"lab"`` (the cross-lab
        recipe of :mod:`.stain`: stain, wide scale, blur and noise)."""
        missing = [r.file_name for r in records if r.path is None or not Path(r.path).is_file()]
        if missing:
            raise BloodcellInputError(
                f"{len(missing)} image file(s) of the annotations were not found, e.g. {missing[:3]}"
            )
        if augment not in (False, True, "basic", "lab"):
            raise BloodcellInputError(f"augmentation must be 'basic' or 'lab'; got {augment!r}")
        self.records = records
        self.lab = augment == "lab"
        if self.lab:
            from .stain import lab_transforms

            self.transform = lab_transforms()
        else:
            self.transform = train_transforms() if augment else None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        from torchvision import tv_tensors

        from ..io.rgb import as_rgb
        from ..io.images import read_image

        rec = self.records[index]
        rgb = as_rgb(read_image(rec.path))
        image = tv_tensors.Image(torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1))
        boxes = tv_tensors.BoundingBoxes(torch.as_tensor(rec.boxes, dtype=torch.float32).reshape(-1, 4),
                                         format="XYXY", canvas_size=rgb.shape[:2])
        target = {"boxes": boxes, "labels": torch.as_tensor(rec.labels, dtype=torch.int64)}
        if self.transform is not None:
            image, target = self.transform(image, target)
        image = image.float() / 255.0
        if self.lab:
            from .stain import add_noise

            image = add_noise(image)
        return image, {"boxes": target["boxes"].as_subclass(torch.Tensor),
                                       "labels": target["labels"]}


def collate(batch):
    return tuple(zip(*batch))


def is_validation(name: str, fraction: float, salt: str = "bloodcell") -> bool:
    """A stable, order-free split: an image is in validation when the hash of its stem falls below ``fraction``."""
    digest = hashlib.sha1(f"{salt}:{Path(name).stem}".encode()).hexdigest()
    return int(digest[:8], 16) / 0xFFFFFFFF < fraction


def split_records(aset: AnnotationSet, fraction: float) -> tuple[list[ImageRecord], list[ImageRecord]]:
    if not 0.0 < fraction < 1.0:
        raise BloodcellInputError(f"validation fraction must be between 0 and 1; got {fraction}")
    val = [r for r in aset.images if is_validation(r.file_name, fraction)]
    train = [r for r in aset.images if not is_validation(r.file_name, fraction)]
    if not train or not val:
        raise BloodcellInputError(
            f"a validation fraction of {fraction} leaves {len(train)} training and {len(val)} validation images of "
            f"{len(aset.images)}; use more images or pass --val"
        )
    return train, val


def repeat_factor_weights(records: list[ImageRecord], n_classes: int, threshold: float = 0.3) -> list[float]:
    """LVIS repeat-factor sampling: an image is drawn ``max_c sqrt(t / f_c)`` times as often (at least once),
    where ``f_c`` is the fraction of images holding class ``c``, so images with rare cells are seen more."""
    n = max(len(records), 1)
    holding = Counter(c for r in records for c in set(r.labels.tolist()))
    factor = {c: max(1.0, math.sqrt(threshold / (holding[c] / n))) for c in range(n_classes) if holding[c]}
    return [max([factor[c] for c in set(r.labels.tolist())] or [1.0]) for r in records]


def content_hash(records: list[ImageRecord], classes: list[str]) -> str:
    """SHA-256 of the class list, each image's bytes and its boxes: the identity of a training set."""
    from ..models.checkpoints import file_digest

    h = hashlib.sha256("\n".join(classes).encode())
    for rec in sorted(records, key=lambda r: r.file_name):
        h.update(rec.file_name.encode())
        h.update(file_digest(rec.path, 64).encode())
        h.update(np.ascontiguousarray(rec.boxes, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(rec.labels, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]
