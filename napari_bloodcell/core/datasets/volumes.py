"""Segmentation cases: image volume(s) + label map, found in the folder layouts researchers have, and split safely.

Layouts read by :func:`find_cases`:

* Medical Segmentation Decathlon / nnU-Net: ``imagesTr/CASE.nii.gz`` + ``labelsTr/CASE.nii.gz``; several
  modalities as ``imagesTr/CASE_0000.nii.gz``, ``CASE_0001.nii.gz``, ... (stacked as channels in that order);
* a napari-bloodcell segmentation dataset (``dataset.json``): the current (or a named) version's
  ``imagesTr``/``labelsTr``;
* a flat folder of ``CASE.nii.gz`` + ``CASE_labels.nii.gz`` (``_label``, ``_seg``, ``_mask`` also work), as the
  sample data is written.

Label names come from ``labels.json`` (``{"1": "left hippocampus"}``), ``LABELS.txt`` (``1 Anterior``) or the
dataset manifest. Intensities are z-scored per volume and channel (the thesis's normalisation); scanners and
files differ by orders of magnitude (MSD hippocampus holds uint8 and float32 up to 1.7 million), so nothing else
would make them comparable.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np

from ..errors import BloodcellInputError
from ..io.nifti import (
    MAX_CHANNELS,
    NIFTI_SUFFIXES,
    NiftiHeader,
    Volume,
    is_nifti_path,
    load_nifti,
    nifti_stem,
    read_header,
)

LABEL_SUFFIX = re.compile(r"^(?P<case>.+?)[_-](labels?|seg|segmentation|mask|gt)$", re.IGNORECASE)
CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
CASE_NUMBER = re.compile(r"(\d+)$")


@dataclasses.dataclass
class Case:
    name: str
    images: list[Path]
    """One file per modality (a 4D file holds several channels itself)."""
    label: Path | None = None


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_nifti_path(p) and not p.name.startswith("."))


def _group_channels(files: list[Path]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for f in files:
        stem = nifti_stem(f)
        m = CHANNEL_SUFFIX.match(stem)
        groups.setdefault(m.group("case") if m else stem, []).append(f)
    return {k: sorted(v) for k, v in groups.items()}


def find_cases(folder: str | Path, version: int | None = None, require_labels: bool = True) -> list[Case]:
    """Every case in ``folder`` (layouts in the module docstring); a clear error when none are found."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BloodcellInputError("no such folder (expected imagesTr/ + labelsTr/, a segmentation dataset, or "
                                  "CASE.nii.gz + CASE_labels.nii.gz files)", folder)
    from ..io.dataset import is_dataset, read_manifest, version_entry

    if is_dataset(folder):
        entry = version_entry(folder, version)
        if read_manifest(folder).get("kind") != "segmentation":
            raise BloodcellInputError("is a box dataset, not a segmentation dataset", folder)
        folder = folder / entry["path"]
    if (folder / "imagesTr").is_dir():
        images = _group_channels(_nifti_files(folder / "imagesTr"))
        labels_dir = folder / "labelsTr"
        labels = {nifti_stem(p): p for p in _nifti_files(labels_dir)} if labels_dir.is_dir() else {}
        cases = [Case(name, files, labels.get(name)) for name, files in sorted(images.items())]
    else:
        files = _nifti_files(folder)
        labels = {}
        for f in files:
            m = LABEL_SUFFIX.match(nifti_stem(f))
            if m:
                labels[m.group("case")] = f
        label_files = set(labels.values())
        images = _group_channels([f for f in files if f not in label_files])
        cases = [Case(name, imgs, labels.get(name)) for name, imgs in sorted(images.items())]
    if require_labels:
        cases = [c for c in cases if c.label is not None]
    if not cases:
        raise BloodcellInputError(
            f"no {'labelled ' if require_labels else ''}NIfTI cases found (allowed: {', '.join(NIFTI_SUFFIXES)} in "
            "imagesTr/ + labelsTr/, or CASE.nii.gz + CASE_labels.nii.gz)", folder)
    return cases


def label_names_for(folder: str | Path) -> dict[int, str]:
    """Names of the label values from a dataset manifest, else the names files :mod:`..io.label_names` reads
    (MSD/nnU-Net ``dataset.json``, ``LABELS.txt``, ``labels.json``) here or one folder up; empty if none."""
    folder = Path(folder)
    from ..io.dataset import is_dataset, read_manifest

    if is_dataset(folder):
        names = read_manifest(folder).get("labels") or {}
        return {int(k): str(v) for k, v in names.items()}
    from ..io.label_names import folder_label_names

    return dict(folder_label_names(folder, levels=2).names)


def zscore(image: np.ndarray) -> np.ndarray:
    """(C, X, Y, Z) → float32, each channel to mean 0 and standard deviation 1 over its finite voxels (a flat
    channel becomes 0). NaN/inf voxels (MRI often holds NaN outside the head) take the channel's finite minimum
    first, so they look like the darkest background instead of turning the whole volume into NaN."""
    out = np.empty(image.shape, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for c in range(image.shape[0]):
            ch = np.array(image[c], dtype=np.float64)
            finite = np.isfinite(ch)
            if not finite.all():
                ch[~finite] = ch[finite].min() if finite.any() else 0.0
            mean, std = float(ch.mean()), float(ch.std())
            out[c] = (ch - mean) / std if std > 0 and math.isfinite(std) else 0.0
    return out


def non_finite_mask(image: np.ndarray) -> np.ndarray | None:
    """(C, X, Y, Z) → (X, Y, Z) True where any channel is NaN or infinite; None when every voxel is finite."""
    if image.dtype.kind != "f":
        return None
    mask = ~np.isfinite(image).all(axis=0)
    return mask if mask.any() else None


def _same_grid(shape: tuple[int, ...], affine: np.ndarray, first: tuple[tuple[int, ...], np.ndarray, Path],
               path: Path) -> None:
    if tuple(shape[:3]) != tuple(first[0][:3]) or not np.allclose(affine, first[1], atol=1e-3):
        raise BloodcellInputError(f"modality does not share the grid of {first[2].name} (shape {tuple(shape[:3])} "
                                  f"vs {tuple(first[0][:3])}); resample it first", path)


def probe_case(paths: list[Path]) -> tuple[NiftiHeader, int]:
    """(the first modality's header, total channels), from the headers alone: a long job checks every case's
    geometry, voxel type, size, shared grid and channel count before it starts, not when it reaches the case."""
    first: NiftiHeader | None = None
    channels = 0
    for p in paths:
        head = read_header(p, verify=True)
        first = first or head
        _same_grid(head.shape, head.affine, (first.shape, first.affine, first.path), p)
        channels += head.channels
    assert first is not None
    if channels > MAX_CHANNELS:
        raise BloodcellInputError(f"the case's {len(paths)} file(s) hold {channels} channels; at most {MAX_CHANNELS} "
                                  "are allowed", first.path)
    return first, channels


def load_image_channels(paths: list[Path]) -> tuple[np.ndarray, Volume]:
    """Stack the case's modalities into (C, X, Y, Z); they must share the voxel grid (shape and affine). The first
    modality's volume is returned with every modality's warnings."""
    first = None
    channels = []
    for p in paths:
        vol = load_nifti(p, as_labels=False)
        if first is None:
            first = vol
        else:
            _same_grid(vol.data.shape, vol.affine, (first.data.shape, first.affine, paths[0]), p)
            first.warnings.extend(f"{p.name}: {w}" for w in vol.warnings)
        data = vol.data if vol.data.ndim == 4 else vol.data[..., None]
        channels.extend(np.moveaxis(data, -1, 0))
        if len(channels) > MAX_CHANNELS:
            raise BloodcellInputError(f"the case's files hold more than {MAX_CHANNELS} channels", p)
    assert first is not None
    return np.stack(channels), first


def load_case(case: Case) -> tuple[np.ndarray, np.ndarray | None, Volume]:
    """(normalised image (C, X, Y, Z) float32, labels (X, Y, Z) int64 or None, the first modality's volume)."""
    image, vol = load_image_channels(case.images)
    labels = None
    if case.label is not None:
        lab = load_nifti(case.label, as_labels=True)
        if lab.data.shape != image.shape[1:]:
            raise BloodcellInputError(f"label map has shape {lab.data.shape}, its image {image.shape[1:]}", case.label)
        if not np.allclose(lab.affine, vol.affine, atol=1e-3):
            raise BloodcellInputError("label map and image have different affines (not on the same grid)", case.label)
        labels = lab.data.astype(np.int64)
    return zscore(image), labels, vol


def case_group(name: str, pair_cases: bool) -> str:
    """The group a case is split with: itself, or with ``pair_cases`` its left/right pair (cases 2k-1 and 2k)."""
    if not pair_cases:
        return name
    m = CASE_NUMBER.search(name)
    if not m:
        raise BloodcellInputError(f"case {name!r} has no trailing number to pair it by (--pair-cases)")
    return f"pair{(int(m.group(1)) + 1) // 2}"


def split_cases(cases: list[Case], fraction: float, pair_cases: bool = False,
                salt: str = "bloodcell") -> tuple[list[Case], list[Case]]:
    """Train and validation cases: stable (hash of the group), groups never split, at least one of each."""
    from .detection import is_validation

    if not 0.0 < fraction < 1.0:
        raise BloodcellInputError(f"validation fraction must be between 0 and 1; got {fraction}")
    if len(cases) < 2:
        raise BloodcellInputError(f"a validation split needs at least 2 cases; got {len(cases)}")
    groups = [case_group(c.name, pair_cases) for c in cases]
    val_groups = {g for g in groups if is_validation(g, fraction, salt)}
    if not val_groups or len(val_groups) == len(set(groups)):
        ordered = sorted(set(groups))
        if len(ordered) < 2:
            raise BloodcellInputError("every case is in one pair group; nothing is left to validate on")
        val_groups = set(ordered[:: max(2, round(1 / fraction))])
    train = [c for c, g in zip(cases, groups) if g not in val_groups]
    val = [c for c, g in zip(cases, groups) if g in val_groups]
    return train, val


def label_values_of(labels: list[np.ndarray]) -> list[int]:
    values = sorted({int(v) for lab in labels for v in np.unique(lab)} | {0})
    if values[0] < 0:
        raise BloodcellInputError(f"label maps hold negative values {values[:3]}; allowed: 0 (background) and up")
    return values
