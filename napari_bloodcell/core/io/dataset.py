"""Reading a versioned training-set folder written by :mod:`napari_bloodcell.core.export`.

``DATASET/dataset.json`` lists the versions and names the current one; each version is a folder under
``versions/`` holding a COCO ``annotations.json`` whose images live, once each, in ``DATASET/images/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import BloodcellInputError
from ..untrusted import class_name, load_json

MANIFEST = "dataset.json"
FORMAT = "napari-bloodcell/dataset"
VERSION_PATH = re.compile(r"versions/v\d{4,9}")


def is_dataset(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    file = path / MANIFEST
    if not file.exists():
        raise BloodcellInputError("is not a napari-bloodcell dataset (no dataset.json)", path)
    data = load_json(file, nan_as_null=True)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise BloodcellInputError(f"not a napari-bloodcell dataset manifest (format {str(found)[:40]!r})", file)
    _check_manifest(data, file)
    return data


def _check_manifest(data: dict[str, Any], file: Path) -> None:
    """A manifest names folders inside its dataset: each version's ``path`` must be ``versions/vNNNN`` (a dataset
    from elsewhere must not make an export read or link files outside it)."""
    versions = data.get("versions", [])
    classes = data.get("classes", [])
    if not isinstance(versions, list) or not isinstance(classes, list):
        raise BloodcellInputError("'versions' and 'classes' must be lists", file)
    for name in classes:
        class_name(name, file)
    for entry in versions:
        if not isinstance(entry, dict) or isinstance(entry.get("version"), bool) or not isinstance(
                entry.get("version"), int):
            raise BloodcellInputError("a version entry lacks an integer 'version'", file)
        if not isinstance(entry.get("path"), str) or not VERSION_PATH.fullmatch(entry["path"]):
            raise BloodcellInputError(f"version {entry['version']}: path {str(entry.get('path'))[:60]!r} is not "
                                      "versions/vNNNN", file)
    current = data.get("current")
    if current is not None and (isinstance(current, bool) or not isinstance(current, int)):
        raise BloodcellInputError("'current' must be a version number", file)


def version_entry(path: str | Path, version: int | None = None) -> dict[str, Any]:
    """The manifest entry of ``version`` (default: the current one)."""
    manifest = read_manifest(path)
    wanted = manifest.get("current") if version is None else version
    for entry in manifest.get("versions", []):
        if entry["version"] == wanted:
            return entry
    known = [v["version"] for v in manifest.get("versions", [])]
    raise BloodcellInputError(f"has no version {wanted}; versions: {known}", path)


def dataset_coco_path(path: str | Path, version: int | None = None) -> Path:
    """The COCO file of a dataset version (default: current)."""
    if read_manifest(path).get("kind", "boxes") != "boxes":
        raise BloodcellInputError("is a segmentation dataset (label maps), not boxes; use it with the segmenter",
                                  path)
    entry = version_entry(path, version)
    return Path(path) / entry["path"] / "annotations.json"


MIN_TO_RETRAIN = {"detector": ("images", 2), "classifier": ("crops", 3), "segmenter": ("n_cases", 2)}
"""What each retraining needs in the dataset's current version: one image or case is kept for validation, and
the classifier needs two cells to train on and one to validate."""


def retrain_readiness(path: str | Path, task: str) -> str | None:
    """Why ``task`` cannot be retrained from the dataset at ``path`` yet (None when it can), said before the
    button is pressed rather than as a failed run."""
    path = Path(path)
    if not is_dataset(path):
        return f"{path} is not a dataset yet: export the reviewed {'volumes' if task == 'segmenter' else 'cells'} first"
    try:
        manifest = read_manifest(path)
        entry = version_entry(path)
    except BloodcellInputError as exc:
        return str(exc)
    kind = manifest.get("kind", "boxes")
    if (kind == "segmentation") != (task == "segmenter"):
        return f"{path} is a {'segmentation' if kind == 'segmentation' else 'box'} dataset; it cannot train a {task}"
    key, need = MIN_TO_RETRAIN[task]
    have = entry.get(key)
    if isinstance(have, int) and have < need:
        what = {"images": "reviewed images", "crops": "reviewed cells", "n_cases": "labelled cases"}[key]
        return (f"a {task} retrain needs at least {need} {what} (one is kept aside to validate on); version "
                f"{entry['version']} of this dataset has {have}: review and export more, then retrain")
    return None
