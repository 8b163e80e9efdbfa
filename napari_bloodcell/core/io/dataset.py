"""Reading a versioned training-set folder written by :mod:`napari_bloodcell.core.export`.

``DATASET/dataset.json`` lists the versions and names the current one; each version is a folder under
``versions/`` holding a COCO ``annotations.json`` whose images live, once each, in ``DATASET/images/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import BloodcellInputError

MANIFEST = "dataset.json"
FORMAT = "napari-bloodcell/dataset"


def is_dataset(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    file = path / MANIFEST
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BloodcellInputError("is not a napari-bloodcell dataset (no dataset.json)", path) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise BloodcellInputError(f"unreadable dataset manifest ({exc})", file) from None
    if data.get("format") != FORMAT:
        raise BloodcellInputError(f"not a napari-bloodcell dataset manifest (format {data.get('format')!r})", file)
    return data


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
