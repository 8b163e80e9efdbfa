"""What the readers see in a path (``bloodcell info``): the same readers napari uses, as plain values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import BloodcellInputError
from .io.formats import claimed_annotation_format, read_annotations
from .io.images import image_header, is_image_path, read_image
from .io.label_names import find_label_names
from .io.lazy_images import lazy_pixels
from .io.nifti import is_nifti_path, load_nifti


def describe(path: str | Path) -> dict[str, Any]:
    """A JSON-ready description of an image, a volume or an annotation set."""
    path = Path(path)
    if not path.exists():
        raise BloodcellInputError("no such file or folder", path)
    if is_nifti_path(path) and not path.is_dir():
        vol = load_nifti(path)
        out: dict[str, Any] = {
            "path": str(path),
            "kind": "label_map" if vol.is_label_map else "volume",
            "shape": list(vol.data.shape),
            "dtype": str(vol.data.dtype),
            "spacing": [round(s, 6) for s in vol.spacing],
            "affine": [[round(float(v), 6) for v in row] for row in vol.affine],
            "orientation": "".join(vol.orientation),
            "channels": vol.n_channels,
        }
        if vol.is_label_map:
            voxel_mm3 = float(vol.spacing[0] * vol.spacing[1] * vol.spacing[2])
            counts = vol.label_values()
            found = find_label_names(path, vol.intent_name, counts)
            out["labels"] = {str(k): {"name": found.name_of(k), "voxels": v, "mm3": round(v * voxel_mm3, 3)}
                             for k, v in counts.items()}
            out["label_names_from"] = found.source
            vol.warnings.extend(found.warnings)
        else:
            low, high, non_finite = vol.finite_range()
            out["intensity"] = {"min": low, "max": high, "non_finite": non_finite}
        if vol.warnings:
            out["warnings"] = list(vol.warnings)
        return out
    if is_image_path(path) and not path.is_dir():
        return _describe_image(path)
    if claimed_annotation_format(path) is not None:
        aset = read_annotations(path)
        missing = sum(1 for r in aset.images if r.path is None)
        return {"path": str(path), "kind": "annotations", **aset.summary(), "images_missing": missing}
    raise BloodcellInputError(
        "is not something bloodcell reads; allowed: JPEG/PNG/TIFF/BMP images, .nii/.nii.gz volumes, VOC/COCO/YOLO/"
        "CSV annotations",
        path,
    )


def _describe_image(path: Path) -> dict[str, Any]:
    """Shape and dtype from the header alone (a 20000×20000 scan is described without decoding it); images small
    enough to read whole are decoded too, which finds a truncated file and the exact dtype."""
    header = image_header(path)  # refuses FIFOs and images above the pixel limit
    shape, dtype = header.shape, header.dtype
    if header.pixels <= lazy_pixels():
        data = read_image(path)
        shape, dtype = data.shape, data.dtype
    return {"path": str(path), "kind": "image", "shape": list(shape), "dtype": str(dtype), "rgb": len(shape) == 3}
