"""NIfTI volumes with their geometry: data in voxel order, the affine, voxel spacing and orientation.

We never reorient the data: the array stays in the file's voxel order so that a label map written back lines up
with its image voxel for voxel, and the affine travels with it. For napari, which draws layers with an axis-aligned
``scale`` and ``translate``, the spacing becomes ``scale`` and the affine's origin ``translate``; the full affine is
kept in the layer metadata (and used when writing), so a rotated or flipped affine is never lost.
"""

from __future__ import annotations

import dataclasses
import gzip
import re
from pathlib import Path

import numpy as np

from ..atomic import ExistPolicy, atomic_write_bytes
from ..errors import BloodcellInputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
LABEL_NAME = re.compile(r"(^|[^a-z])(label|labels|seg|segmentation|mask|annot|gt)([^a-z]|$)", re.IGNORECASE)
LABEL_DIRS = ("labelstr", "labelsts", "labels", "masks", "segmentations")
MAX_LABEL_VALUES = 64


def is_nifti_path(path: str | Path) -> bool:
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def nifti_stem(path: str | Path) -> str:
    name = Path(path).name
    return name[:-7] if name.lower().endswith(".nii.gz") else name[: -len(Path(name).suffix)]


@dataclasses.dataclass
class Volume:
    data: np.ndarray
    """(X, Y, Z) or (X, Y, Z, C) in the file's voxel order; C holds modalities (e.g. T1, T2)."""
    affine: np.ndarray
    """4x4 voxel -> world (RAS+, mm) transform."""
    spacing: tuple[float, float, float]
    orientation: tuple[str, str, str]
    """Axis codes of the voxel axes, e.g. ('R', 'A', 'S')."""
    is_label_map: bool
    path: Path | None = None

    @classmethod
    def from_array(cls, data: np.ndarray, affine: np.ndarray, is_label_map: bool, path: Path | None = None) -> Volume:
        """A volume whose spacing and orientation are read off its affine (column norms, nearest axis codes)."""
        import nibabel as nib

        affine = np.asarray(affine, dtype=np.float64)
        spacing = tuple(float(v) for v in nib.affines.voxel_sizes(affine))
        return cls(data=data, affine=affine, spacing=spacing,  # type: ignore[arg-type]
                   orientation=tuple(nib.aff2axcodes(affine)),  # type: ignore[arg-type]
                   is_label_map=is_label_map, path=path)

    @property
    def n_channels(self) -> int:
        return 1 if self.data.ndim == 3 else int(self.data.shape[3])

    @property
    def translate(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.affine[:3, 3])  # type: ignore[return-value]

    def label_values(self) -> dict[int, int]:
        """Voxel count per label value (label maps only)."""
        values, counts = np.unique(self.data, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts)}


def looks_like_label_name(path: str | Path) -> bool:
    path = Path(path)
    return bool(LABEL_NAME.search(nifti_stem(path))) or path.parent.name.lower() in LABEL_DIRS


def _integer_valued(data: np.ndarray) -> bool:
    if data.dtype.kind in "iub":
        return True
    if data.dtype.kind == "f":
        return bool(np.all(np.isfinite(data)) and np.all(data == np.round(data)))
    return False


def _smallest_label_dtype(data: np.ndarray) -> np.ndarray:
    lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
    for dtype in (np.uint8, np.uint16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return data.astype(dtype, copy=False)
    return data.astype(np.int64, copy=False)


def load_nifti(path: str | Path, as_labels: bool | None = None) -> Volume:
    """Read a 3D or 4D NIfTI file. ``as_labels=None`` decides from the name and the values.

    A volume is a label map when it holds integer values, at most 64 distinct ones, and either its name says so
    (``*label*``, ``*seg*``, ``*mask*``, a ``labelsTr/`` folder) or it has at most 64 values and is stored as an
    integer type. A uint8 T1 scan has far more distinct values, so it stays an image.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise BloodcellInputError("no such file", path)
    if not is_nifti_path(path):
        raise BloodcellInputError("not a NIfTI file (allowed: .nii, .nii.gz)", path)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises several types for truncated or corrupt files
        raise BloodcellInputError(f"cannot read NIfTI: {exc}", path) from exc
    data = np.asarray(data)
    if data.ndim == 5 and data.shape[3] == 1:  # (X, Y, Z, 1, C): some tools store channels on the 5th axis
        data = data[:, :, :, 0, :]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim not in (3, 4):
        raise BloodcellInputError(f"volume has shape {data.shape}; allowed: 3D (X, Y, Z) or 4D (X, Y, Z, C)", path)
    affine = np.asarray(img.affine, dtype=np.float64)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if as_labels is None:
        few_values = data.ndim == 3 and _integer_valued(data) and len(np.unique(data)) <= MAX_LABEL_VALUES
        as_labels = few_values and (looks_like_label_name(path) or data.dtype.kind in "iub")
    elif as_labels and not (data.ndim == 3 and _integer_valued(data)):
        raise BloodcellInputError(f"cannot be a label map: needs a 3D volume of integer values (got {data.dtype})", path)
    if as_labels:
        data = _smallest_label_dtype(np.round(data) if data.dtype.kind == "f" else data)
    return Volume(
        data=data,
        affine=affine,
        spacing=zooms,  # type: ignore[arg-type]
        orientation=tuple(nib.aff2axcodes(affine)),  # type: ignore[arg-type]
        is_label_map=bool(as_labels),
        path=path,
    )


def affine_from_scale_translate(scale: tuple[float, ...], translate: tuple[float, ...]) -> np.ndarray:
    """The axis-aligned affine napari's scale/translate describe (for layers that have no source affine)."""
    affine = np.eye(4)
    affine[[0, 1, 2], [0, 1, 2]] = np.asarray(scale, dtype=np.float64)[-3:]
    affine[:3, 3] = np.asarray(translate, dtype=np.float64)[-3:]
    return affine


def nifti_bytes(data: np.ndarray, affine: np.ndarray, gz: bool, is_label_map: bool = False) -> bytes:
    """Encode a volume; label maps get the smallest unsigned type and an intent that says so."""
    import nibabel as nib

    arr = np.asarray(data)
    if is_label_map:
        if not _integer_valued(arr):
            raise BloodcellInputError(f"a label map must hold integers; got dtype {arr.dtype}")
        arr = _smallest_label_dtype(arr)
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    if is_label_map:
        img.header.set_intent("label")
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=6, mtime=0) if gz else raw


def save_nifti(
    data: np.ndarray, affine: np.ndarray, path: str | Path, is_label_map: bool = False, exist: ExistPolicy = "refuse"
) -> Path:
    path = Path(path)
    if not is_nifti_path(path):
        raise BloodcellInputError("must end in .nii or .nii.gz", path)
    gz = path.name.lower().endswith(".gz")
    return atomic_write_bytes(path, nifti_bytes(data, affine, gz, is_label_map), exist=exist)
