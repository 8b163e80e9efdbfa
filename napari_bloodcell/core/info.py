"""What the readers see in a path (``bloodcell info``): the same readers napari uses, as plain values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import BloodcellInputError
from .io.formats import claimed_annotation_format, read_annotations
from .io.images import is_image_path, read_image
from .io.nifti import is_nifti_path, load_nifti


def describe(path: str | Path) -> dict[str, Any]:
    """A JSON-ready description of an image, a volume or an annotation set."""
    path = Path(path)
    if not path.exists():
        raise BloodcellInputError("no such file or folder", path)
    if path.is_file() and is_nifti_path(path):
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
            out["labels"] = {str(k): {"voxels": v, "mm3": round(v * voxel_mm3, 3)} for k, v in vol.label_values().items()}
        else:
            out["intensity"] = {"min": float(vol.data.min()), "max": float(vol.data.max())}
        return out
    if path.is_file() and is_image_path(path):
        data = read_image(path)
        return {"path": str(path), "kind": "image", "shape": list(data.shape), "dtype": str(data.dtype),
                "rgb": bool(data.ndim == 3)}
    if claimed_annotation_format(path) is not None:
        aset = read_annotations(path)
        missing = sum(1 for r in aset.images if r.path is None)
        return {"path": str(path), "kind": "annotations", **aset.summary(), "images_missing": missing}
    raise BloodcellInputError(
        "is not something bloodcell reads; allowed: JPEG/PNG/TIFF/BMP images, .nii/.nii.gz volumes, VOC/COCO/YOLO/"
        "CSV annotations",
        path,
    )
