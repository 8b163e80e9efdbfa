"""Corrected 3D label maps → a versioned segmentation training set, with the same guarantees as the 2D export.

Layout (the versions are Medical Segmentation Decathlon folders, so any tool that reads MSD reads them)::

    DATASET/dataset.json                        manifest: kind "segmentation", label names, versions, current
    DATASET/volumes/<sha256[:16]>.nii[.gz]      every image volume once, named by its content, bytes unchanged
    DATASET/versions/v0002/imagesTr/CASE.nii.gz a hard link (or copy) of the case's volume
    DATASET/versions/v0002/labelsTr/CASE.nii.gz the corrected label map, on the image's grid (same affine)
    DATASET/versions/v0002/README.txt           who exported what, when

A new version holds every case of the previous one plus the exported cases (a case exported again replaces its
label map in the new version only). It is built in a hidden folder, moved into place, and only then named current
in the manifest, so a killed export leaves the previous version current and complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Generator
from pathlib import Path

import numpy as np

from .progress import step
from .atomic import atomic_write_bytes, atomic_write_text, folder_lock, remove_stale_partials, staged_directory
from .errors import BloodcellInputError
from .export import _link_or_copy, _next_version, _now, _previous_version_dir
from .io.dataset import FORMAT, MANIFEST, is_dataset, read_manifest
from .io.nifti import is_nifti_path, nifti_bytes, nifti_stem, read_header
from .untrusted import is_regular_file, json_text


@dataclasses.dataclass
class VolumeExportItem:
    """One corrected volume: its label map and where its image comes from (a NIfTI file, or the array itself)."""

    name: str
    labels: np.ndarray
    affine: np.ndarray
    image_file: Path | None = None
    image: np.ndarray | None = None
    label_names: dict[int, str] = dataclasses.field(default_factory=dict)
    source: str = ""


@dataclasses.dataclass
class VolumeExportResult:
    dataset: Path
    version: int
    added: list[str]
    replaced: list[str]
    cases: int
    label_voxels: dict[str, int]


def _image_bytes(item: VolumeExportItem) -> tuple[bytes, str]:
    if item.image_file is not None:
        path = Path(item.image_file)
        if not is_regular_file(path) or not is_nifti_path(path):
            raise BloodcellInputError("the image of this label map is not a readable NIfTI file", path)
        read_header(path)  # a broken header is refused before it is copied into the dataset
        try:
            return path.read_bytes(), ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
        except OSError as exc:
            raise BloodcellInputError(f"cannot read: {exc.strerror or exc}", path) from None
    if item.image is None:
        raise BloodcellInputError(f"{item.name}: the label map has no image (neither a file nor the volume)")
    return nifti_bytes(item.image, item.affine, gz=True), ".nii.gz"


def _check(item: VolumeExportItem, image_shape: tuple[int, ...] | None) -> np.ndarray:
    labels = np.asarray(item.labels)
    if labels.ndim != 3:
        raise BloodcellInputError(f"{item.name}: a label map must be 3D; got shape {labels.shape}")
    if labels.dtype.kind not in "iub" or (labels.size and labels.min() < 0):
        raise BloodcellInputError(f"{item.name}: label maps hold non-negative integers; got {labels.dtype}")
    if image_shape is not None and tuple(image_shape[:3]) != labels.shape:
        raise BloodcellInputError(f"{item.name}: label map shape {labels.shape} differs from its image's "
                                  f"{tuple(image_shape[:3])}")
    return labels


def _case_names(manifest: dict) -> dict[str, str]:
    """Case name → volume digest of the current version."""
    entry = next((v for v in manifest.get("versions", []) if v["version"] == manifest.get("current")), None)
    return dict(entry.get("cases", {})) if entry else {}


def export_segmentation(items: list[VolumeExportItem], dataset: str | Path, by: str, note: str = ""
                        ) -> Generator[tuple[int, int], None, VolumeExportResult]:
    """Add the corrected label maps (with their images) to ``dataset`` as a new version; yields (done, total)."""
    if not items:
        raise BloodcellInputError("nothing to export: no label maps were given")
    if not by.strip():
        raise BloodcellInputError("an export needs the name of the person making it")
    dataset = Path(dataset).resolve()
    if dataset.exists() and not is_dataset(dataset) and any(dataset.iterdir()):
        raise BloodcellInputError("exists and is not a napari-bloodcell dataset; choose a new or empty folder", dataset)
    with folder_lock(dataset, "this dataset"):
        remove_stale_partials(dataset, ("", "volumes", "versions"))
        manifest = read_manifest(dataset) if is_dataset(dataset) else {
            "format": FORMAT, "kind": "segmentation", "created": _now(), "labels": {}, "current": None,
            "versions": []}
        if manifest.get("kind") != "segmentation":
            raise BloodcellInputError("is a box dataset; export label maps into a segmentation dataset", dataset)
        current = _case_names(manifest)
        previous_dir = _previous_version_dir(dataset, manifest)
        labels_names = dict(manifest.get("labels", {}))
        version = _next_version(dataset, manifest)
        rel = f"versions/v{version:04d}"
        added, replaced, voxels = [], [], {}
        cases = dict(current)
        total = len(items)
        with staged_directory(dataset / rel) as stage:
            (stage / "imagesTr").mkdir()
            (stage / "labelsTr").mkdir()
            fresh: dict[str, np.ndarray] = {}
            for k, item in enumerate(items):
                raw, suffix = _image_bytes(item)
                digest = hashlib.sha256(raw).hexdigest()[:16]
                stored = dataset / "volumes" / f"{digest}{suffix}"
                if not stored.exists():
                    atomic_write_bytes(stored, raw)
                stored_image = read_header(stored)  # checked geometry: a NaN or zero sform never reaches a label map
                labels = _check(item, stored_image.shape)
                name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.name) or "case"
                if name in cases and cases[name] != digest:  # another image already has this name
                    name = f"{name}_{digest[:8]}"
                (replaced if name in cases else added).append(name)
                cases[name] = digest
                fresh[name] = labels
                for v, n in item.label_names.items():
                    labels_names.setdefault(str(int(v)), n)
                atomic_write_bytes(stage / "labelsTr" / f"{name}.nii.gz",
                                   nifti_bytes(labels, stored_image.affine, gz=True, is_label_map=True))
                yield step(k, total)
            for name, digest in sorted(cases.items()):
                stored = next((dataset / "volumes").glob(f"{digest}.nii*"))
                _link_or_copy(stored, stage / "imagesTr" / f"{name}{stored.name[len(digest):]}")
                if name not in fresh:
                    assert previous_dir is not None
                    _link_or_copy(previous_dir / "labelsTr" / f"{name}.nii.gz", stage / "labelsTr" / f"{name}.nii.gz")
            for name, labels in fresh.items():
                values, counts = np.unique(labels, return_counts=True)
                for v, c in zip(values, counts):
                    if v:
                        key = labels_names.get(str(int(v)), f"label {int(v)}")
                        voxels[key] = voxels.get(key, 0) + int(c)
            atomic_write_text(stage / "labels.json", json.dumps(labels_names, indent=1) + "\n")
            atomic_write_text(stage / "README.txt", "\n".join(
                [f"napari-bloodcell segmentation dataset version {version}", f"exported by {by} on {_now()}", "",
                 "label maps in this export:"] + [f"  {i.name} ({i.source or 'napari'})" for i in items]) + "\n")
        entry = {"version": version, "path": rel, "created": _now(), "by": by, "note": note, "added": added,
                 "replaced": replaced, "cases": cases, "n_cases": len(cases), "label_voxels": voxels,
                 "parent": manifest.get("current")}
        manifest.update(labels=labels_names, current=version, versions=[*manifest["versions"], entry])
        atomic_write_text(dataset / MANIFEST, json_text(manifest, indent=1) + "\n", exist="replace")
    yield step(total, total)
    return VolumeExportResult(dataset, version, added, replaced, len(cases), voxels)


def item_from_files(image: str | Path, labels: str | Path, by_name: str | None = None) -> VolumeExportItem:
    """A label-map file and its image file (for the CLI): they must share the grid."""
    from .io.nifti import load_nifti

    lab = load_nifti(labels, as_labels=True)
    img = load_nifti(image, as_labels=False)
    if img.data.shape[:3] != lab.data.shape or not np.allclose(img.affine, lab.affine, atol=1e-3):
        raise BloodcellInputError(f"label map (shape {lab.data.shape}) is not on the grid of {Path(image).name} "
                                  f"(shape {img.data.shape[:3]})", labels)
    return VolumeExportItem(by_name or nifti_stem(image), lab.data, img.affine, image_file=Path(image),
                            source=str(labels))
