"""NIfTI volumes with their geometry: data in voxel order, the affine, voxel spacing and orientation.

We never reorient the data: the array stays in the file's voxel order so that a label map written back lines up
with its image voxel for voxel, and the affine travels with it. For napari, which draws layers with an axis-aligned
``scale`` and ``translate``, the spacing becomes ``scale`` and the affine's origin ``translate``; the full affine is
kept in the layer metadata (and used when writing), so a rotated or flipped affine is never lost.

A NIfTI file is untrusted input: :func:`read_header` checks what the header declares before a voxel is read (a
regular file with a NIfTI signature, real voxel types, at most :data:`MAX_CHANNELS` channels and ``max_pixels()``
values, the voxel bytes present, a usable voxel-to-world transform). nibabel's transform (sform, else qform, else
pixdim) is used when valid; when NaN, zero or singular the next valid one is used with a warning; with none, refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import logging
import math
import re
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import ExistPolicy, atomic_write_bytes
from ..errors import BloodcellInputError
from ..untrusted import max_pixels, one_line, regular_file

NIFTI_SUFFIXES = (".nii", ".nii.gz")
LABEL_NAME = re.compile(r"(^|[^a-z])(label|labels|seg|segmentation|mask|annot|gt)([^a-z]|$)", re.IGNORECASE)
LABEL_DIRS = ("labelstr", "labelsts", "labels", "masks", "segmentations")
MAX_LABEL_VALUES = 64
MAX_CHANNELS = 16
"""Channels are modalities (T1, T2, FLAIR, ...), each a napari layer and a network input; a 4D file with more is a
time series (fMRI, diffusion) or a broken header, and is refused rather than opened as hundreds of layers."""
VERIFY_GZIP_ABOVE = 64 * 1024 * 1024
"""nibabel allocates a .nii.gz's array before decompressing; above this many bytes the stream is counted first."""
MAX_AFFINE_ENTRY = 1e20
"""Header transforms are stored as float32; a voxel or origin beyond this many mm is a broken header."""


def is_nifti_path(path: str | Path) -> bool:
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def nifti_stem(path: str | Path) -> str:
    name = Path(path).name
    return name[:-7] if name.lower().endswith(".nii.gz") else name[: -len(Path(name).suffix)]


def _why(exc: BaseException) -> str:
    """A library's message on one line, or the exception's type when it has none (a bare ``MemoryError``)."""
    return one_line(exc) or type(exc).__name__


def affine_problem(affine: Any) -> str | None:
    """What makes ``affine`` unusable as a voxel-to-world transform (None when it is fine)."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        return f"not a 4x4 matrix (shape {a.shape})"
    if not np.all(np.isfinite(a)):
        return "not finite (it holds NaN or infinity)"
    if not np.any(a[:3, :3]):
        return "all zeros"
    if np.abs(a).max() > MAX_AFFINE_ENTRY:
        return f"implausibly large (an entry beyond ±{MAX_AFFINE_ENTRY:g} mm)"
    if (s := np.linalg.svd(a[:3, :3], compute_uv=False))[-1] <= 1e-6 * s[0]:
        return "singular (it flattens the volume onto a plane or a line)"
    return None


def check_affine(affine: Any, path: str | Path | None = None) -> np.ndarray:
    """``affine`` as a float64 4x4 array, refused with one line when it cannot place voxels in space."""
    if (problem := affine_problem(affine)) is not None:
        raise BloodcellInputError(f"the affine (voxel-to-world transform) is {problem}", path)
    return np.asarray(affine, dtype=np.float64)


@dataclasses.dataclass
class NiftiHeader:
    """What a NIfTI file declares, checked before any voxel is read."""

    path: Path
    shape: tuple[int, int, int]
    """Spatial (X, Y, Z); a 2D file is (X, Y, 1)."""
    channels: int
    """Values per voxel: the 4th axis, times 3 for RGB voxels."""
    affine: np.ndarray
    spacing: tuple[float, float, float]
    orientation: tuple[str, str, str]
    warnings: list[str]
    has_channel_axis: bool
    """True when the data comes back as (X, Y, Z, C) rather than (X, Y, Z)."""
    intent_name: str = ""
    """The header's 16-byte intent name, printable ASCII only (some tools name a mask's structure there)."""
    oriented: bool = True
    """False when only pixdim places the voxels: the orientation is then nibabel's Analyze guess, not known."""


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
    warnings: list[str] = dataclasses.field(default_factory=list)
    """One line each: what was odd about the file and what was done about it (a fallback transform, NaN voxels)."""
    intent_name: str = ""
    oriented: bool = True
    """Whether the affine knows left from right (see :attr:`NiftiHeader.oriented`)."""

    @classmethod
    def from_array(cls, data: np.ndarray, affine: np.ndarray, is_label_map: bool, path: Path | None = None) -> Volume:
        """A volume whose spacing and orientation are read off its affine (column norms, nearest axis codes)."""
        import nibabel as nib

        affine = check_affine(affine, path)
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

    def axis_labels(self) -> tuple[str, str, str] | None:
        """Each voxel axis as the anatomical direction it runs in, e.g. ('L→R', 'P→A', 'I→S'); None when the
        file does not know its orientation."""
        return direction_labels(self.orientation) if self.oriented else None

    def label_values(self) -> dict[int, int]:
        """Voxel count per label value (label maps only)."""
        values, counts = np.unique(self.data, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts)}

    def finite_range(self) -> tuple[float | None, float | None, int]:
        """(min, max) of the finite voxels and how many are NaN/inf (a NaN minimum would make invalid JSON)."""
        values = self.data[np.isfinite(self.data)] if self.data.dtype.kind == "f" else self.data.ravel()
        lo, hi = (float(values.min()), float(values.max())) if values.size else (None, None)
        return lo, hi, int(self.data.size - values.size)


OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}


def direction_labels(orientation: tuple[Any, ...]) -> tuple[str, str, str] | None:
    """('R', 'A', 'S') -> ('L→R', 'P→A', 'I→S'): where each axis comes from and goes to as its index grows (a
    slider or an arrow labelled with one letter leaves that open). None unless three distinct axis codes."""
    codes = [str(c) for c in orientation]
    if len(codes) != 3 or any(c not in OPPOSITE for c in codes) or len({c + OPPOSITE[c] for c in codes} |
                                                                        {OPPOSITE[c] + c for c in codes}) != 6:
        return None  # two voxel axes along one anatomical axis
    return tuple(f"{OPPOSITE[c]}→{c}" for c in codes)  # type: ignore[return-value]


def looks_like_label_name(path: str | Path) -> bool:
    path = Path(path)
    return bool(LABEL_NAME.search(nifti_stem(path))) or path.parent.name.lower() in LABEL_DIRS


# ------------------------------------------------------------------------------------------- the header


def _cannot(problem: str, path: Path) -> BloodcellInputError:
    return BloodcellInputError(f"cannot read NIfTI: {problem}", path)


def _first_bytes(path: Path, n: int = 540) -> bytes:
    """The first ``n`` bytes of the (decompressed) file, with one clear line for empty, mislabelled, truncated or
    corrupt gzip files (nibabel says "Cannot work out file type" for all of them)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(n)
    except OSError as exc:
        raise _cannot(exc.strerror or _why(exc), path) from None
    if not raw:
        raise _cannot("the file is empty (0 bytes)", path)
    gzipped = raw[:2] == b"\x1f\x8b"
    if path.name.lower().endswith(".gz"):
        if not gzipped:
            raise _cannot("named .nii.gz but not gzip-compressed (rename it to .nii?)", path)
        raw = b""
        try:
            with gzip.open(path, "rb") as fh:
                for part in (348, n - 348):  # a stream ending after a NIfTI-1 header is diagnosed later
                    raw += fh.read(part)
        except EOFError:
            if len(raw) >= 348:
                return raw
            raise _cannot("truncated: the compressed data ends inside the NIfTI header", path) from None
        except (OSError, zlib.error) as exc:
            raise _cannot(f"corrupt gzip data ({_why(exc)})", path) from None
    elif gzipped:
        raise _cannot("gzip-compressed but named .nii (rename it to .nii.gz)", path)
    return raw


def _check_signature(path: Path) -> None:
    """Refuse what is not a single-file NIfTI-1 or NIfTI-2 (text, Analyze, a .hdr/.img pair, a truncated header)."""
    raw = _first_bytes(path)
    sizes = {int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big")}
    if 348 in sizes and len(raw) >= 348 and raw[344:348] == b"n+1\x00":
        return
    if 540 in sizes and len(raw) >= 540 and raw[4:8] == b"n+2\x00":
        return
    if sizes & {348, 540} and len(raw) < min(sizes & {348, 540}):
        raise _cannot(f"truncated: the file ends inside the NIfTI header (after {len(raw)} bytes)", path)
    if b"\x00" not in raw and sum(32 <= b < 127 or b in b"\t\r\n" for b in raw) >= 0.95 * len(raw):
        raise _cannot("it is a text file, not a NIfTI volume", path)
    if 348 in sizes:  # 'ni1': the header of a .hdr/.img pair; none: Analyze 7.5
        raise _cannot(f"not a single-file NIfTI-1: its magic is {raw[344:348]!r}, not 'n+1'", path)
    raise _cannot("not a NIfTI file: it does not start with a NIfTI-1 or NIfTI-2 header", path)


class _NibabelNotes(logging.Filter):
    """nibabel's log records (header fixes) of the reading thread become the volume's warnings, not stderr lines."""

    local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        notes = getattr(self.local, "notes", None)
        if notes is None:
            return True
        text = f"nibabel: {' '.join(record.getMessage().split())}"
        if text not in notes:
            notes.append(text)
        return False


_FILTER = _NibabelNotes()


@contextlib.contextmanager
def _nibabel_notes(notes: list[str]) -> Iterator[None]:
    """nibabel's messages go to ``notes`` and numpy's NaN warnings are silenced (results are checked): both would
    add lines to the CLI's one-line errors."""
    logger = logging.getLogger("nibabel.global")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    saved = getattr(_FILTER.local, "notes", None)
    _FILTER.local.notes = notes
    try:
        with np.errstate(all="ignore"):
            yield
    finally:
        _FILTER.local.notes = saved


def _layout(disk_shape: tuple[int, ...], dtype: np.dtype, path: Path) -> tuple[tuple[int, int, int], int, bool]:
    """(spatial shape, channels, has a channel axis) from the declared shape and voxel type, or a refusal."""
    if not disk_shape or any(n < 1 for n in disk_shape):
        raise BloodcellInputError(f"declares a volume of shape {disk_shape}; every axis needs a voxel", path)
    if len(disk_shape) < 2:
        raise BloodcellInputError(f"declares a 1D volume (shape {disk_shape}); allowed: 2D, 3D or 4D", path)
    spatial = (*disk_shape[:3], 1)[:3] if len(disk_shape) == 2 else disk_shape[:3]
    extra = [n for n in disk_shape[3:] if n != 1]  # (X, Y, Z, 1, C): some tools put channels on the 5th axis
    if len(extra) > 1:
        raise BloodcellInputError(f"volume has shape {disk_shape}; allowed: 3D (X, Y, Z) or 4D (X, Y, Z, C)", path)
    if dtype.kind == "c":
        raise BloodcellInputError(f"holds complex voxels ({dtype}); bloodcell reads real intensities: save the "
                                  "magnitude (or the real part) as a real-valued NIfTI first", path)
    fields = 1
    if dtype.names:  # RGB24 / RGBA32: one value per colour
        if any(dtype.fields[n][0].kind not in "iuf" for n in dtype.names):
            raise BloodcellInputError(f"holds voxels of unsupported type {dtype}", path)
        fields = len(dtype.names)
    elif dtype.kind not in "biuf":
        raise BloodcellInputError(f"holds voxels of unsupported type {dtype}", path)
    channels = (extra[0] if extra else 1) * fields
    if channels > MAX_CHANNELS:
        raise BloodcellInputError(f"has {channels} channels (shape {disk_shape}); at most {MAX_CHANNELS} are read, "
                                  "as modalities such as T1 and T2 (a time series is not supported)", path)
    if (values := math.prod(spatial) * channels) > (limit := max_pixels()):
        dims = "x".join(str(n) for n in (*spatial, *([channels] if channels > 1 else [])))
        raise BloodcellInputError(f"declares {dims} = {values:,} voxel values, above the limit of {limit:,}; if the "
                                  f"volume is genuine, raise it with BLOODCELL_MAX_PIXELS={values}", path)
    return spatial, channels, bool(extra) or fields > 1  # type: ignore[return-value]


def _gzip_length(path: Path, need: int, strict: bool = True) -> tuple[int, bool]:
    """How many decompressed bytes ``path`` holds (counting no further than ``need``: bounded memory), and whether
    the stream ends early (truncated); corrupt data is refused (``strict``) or counted as not truncated."""
    have = 0
    try:
        with gzip.open(path, "rb") as fh:
            while have < need and (chunk := fh.read(min(8 << 20, need - have))):
                have += len(chunk)
    except EOFError:
        return have, True
    except (OSError, zlib.error) as exc:
        if strict:
            raise _cannot(f"corrupt gzip data ({_why(exc)})", path) from None
    return have, False


def _check_present(img: Any, path: Path, disk_shape: tuple[int, ...], dtype: np.dtype, verify: bool) -> None:
    """Refuse a file that holds fewer voxel bytes than its header declares, before nibabel allocates them (a
    .nii.gz is decompressed to count them when it is large, or when ``verify`` asks for it)."""
    offset = int(getattr(img.dataobj, "offset", 0))  # the loaded header's own offset is reset to 0
    need, have, cut = offset + math.prod(disk_shape) * dtype.itemsize, 0, False
    if not path.name.lower().endswith(".gz"):
        have = path.stat().st_size
    elif verify or need > VERIFY_GZIP_ABOVE:
        have, cut = _gzip_length(path, 1 << 62 if verify else need)  # verify: to the end, checksum included
    else:
        have = need  # small: nibabel's own read finds a short stream
    if have < need:
        raise _cannot(f"truncated: the header declares {need - offset:,} bytes of voxels from byte {offset}, the "
                      f"file holds {max(have - offset, 0):,}", path)
    if cut:
        raise _cannot("truncated: the compressed data ends before its gzip trailer", path)


def _geometry(img: Any, path: Path) -> tuple[np.ndarray, tuple[float, ...], list[str], bool]:
    """nibabel's transform (sform, else qform, else pixdim) when valid, else the next valid one with a note saying
    so; the spacing from pixdim, or from that transform when pixdim is NaN or zero; a refusal when none is valid.
    The last value says whether the transform knows the anatomical directions (an sform or qform does; pixdim
    alone, the Analyze fallback, does not)."""
    hdr = img.header
    zooms = ([float(z) for z in hdr.get_zooms()[:3]] + [1.0, 1.0])[:3]
    zooms_ok = all(math.isfinite(z) and z > 0 for z in zooms)
    tried: list[tuple[str, Any, str | None]] = []
    for name in ("sform", "qform"):
        try:
            matrix, code = getattr(hdr, f"get_{name}")(coded=True)
            if code and int(code) > 0:
                tried.append((name, matrix, affine_problem(matrix)))
        except Exception as exc:  # a broken quaternion may not decompose
            tried.append((name, None, f"unreadable ({_why(exc)})"))
    base = np.asarray(hdr.get_base_affine(), dtype=np.float64) if zooms_ok else None
    tried.append(("pixdim", base, None if zooms_ok else f"voxel size ({', '.join(f'{z:g}' for z in zooms)})"))
    for k, (name, matrix, problem) in enumerate(tried):
        if problem is None and matrix is not None:
            break
    else:
        reasons = [f"the {n} is {p}" if n != "pixdim" else f"pixdim holds {p}" for n, _, p in tried]
        raise BloodcellInputError("broken header, no usable voxel-to-world transform: "
                                  f"{'; '.join(['no sform or qform is set'] * (len(tried) == 1) + reasons)}", path)
    affine = np.asarray(matrix, dtype=np.float64)
    notes = []
    if k:
        using = "the voxel size in pixdim (orientation and origin unknown)" if name == "pixdim" else f"the {name}"
        notes.append(f"broken header: {'; '.join(f'the {n} is {p}' for n, _, p in tried[:k])}; using {using} instead")
    oriented = name != "pixdim"
    if zooms_ok:
        return affine, tuple(zooms), notes, oriented
    import nibabel as nib

    spacing = tuple(float(v) for v in nib.affines.voxel_sizes(affine))
    notes.append(f"pixdim holds {tried[-1][2]}; using the {name}'s voxel size "
                 f"({', '.join(f'{s:g}' for s in spacing)}) mm")
    return affine, spacing, notes, oriented


def _unreadable(path: Path, exc: BaseException) -> BloodcellInputError:
    """One line for whatever nibabel raised; a truncated file is named as such (nibabel says "Cannot work out file
    type" or "Expected N bytes, got M bytes from PATH - could the file be damaged?")."""
    if isinstance(exc, MemoryError):  # its message is empty
        return _cannot("not enough memory (MemoryError)", path)
    if (short := re.match(r"Expected (\d+) bytes, got (\d+) bytes", str(exc))) or isinstance(exc, EOFError) or (
            path.name.lower().endswith(".gz") and _gzip_length(path, 1 << 62, False)[1]):
        held = f" ({int(short[2]):,} of {int(short[1]):,} bytes of voxels)" if short else ""
        return _cannot(f"truncated: the file ends before all voxels were read{held}", path)
    return _cannot(_why(exc), path)


def _open(path: str | Path, verify: bool = False) -> tuple[Any, NiftiHeader]:
    import nibabel as nib

    path = regular_file(path)
    if not is_nifti_path(path):
        raise BloodcellInputError("not a NIfTI file (allowed: .nii, .nii.gz)", path)
    _check_signature(path)
    notes: list[str] = []
    with _nibabel_notes(notes):
        try:
            img = nib.load(str(path))
            disk_shape = tuple(int(n) for n in img.header.get_data_shape())
            dtype = np.dtype(img.header.get_data_dtype())
        except BloodcellInputError:
            raise
        except Exception as exc:  # nibabel raises several types for corrupt headers
            raise _unreadable(path, exc) from None
        spatial, channels, has_axis = _layout(disk_shape, dtype, path)
        _check_present(img, path, disk_shape, dtype, verify)
        affine, spacing, geometry_notes, oriented = _geometry(img, path)
    orientation = tuple(nib.aff2axcodes(affine))
    head = NiftiHeader(path, spatial, channels, affine, spacing, orientation,  # type: ignore[arg-type]
                       notes + geometry_notes, has_axis, _intent_name(img.header), oriented)
    return img, head


def _intent_name(hdr: Any) -> str:
    """The intent name as printable ASCII ('' when unset or unreadable): it is 16 untrusted bytes."""
    try:
        raw = bytes(np.asarray(hdr["intent_name"]).item())
    except Exception:  # a NIfTI-2 or odd header without the field
        return ""
    text = raw.split(b"\x00", 1)[0].decode("ascii", "replace")
    return "".join(c for c in text if c.isprintable() and c != "\ufffd").strip()


def read_header(path: str | Path, verify: bool = False) -> NiftiHeader:
    """Check a NIfTI file without keeping its voxels: what a long job runs first, so it cannot fail half-way;
    ``verify`` also decompresses a .nii.gz to make sure every voxel is there."""
    return _open(path, verify)[1]


# ------------------------------------------------------------------------------------------- the voxels


def _integer_valued(data: np.ndarray) -> bool:
    if data.dtype.kind in "iub":
        return True
    if data.dtype.kind == "f":
        return bool(np.all(np.isfinite(data)) and np.all(data == np.round(data)))
    return False


def _smallest_label_dtype(data: np.ndarray, path: str | Path | None = None) -> np.ndarray:
    lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
    for dtype in (np.uint8, np.uint16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return data.astype(dtype, copy=False)
    info64 = np.iinfo(np.int64)
    if lo < info64.min or hi > info64.max:
        raise BloodcellInputError(f"label values span {lo:.3g}..{hi:.3g}, beyond any integer type", path)
    return data.astype(np.int64, copy=False)


def _channels_last(data: np.ndarray, head: NiftiHeader) -> np.ndarray:
    """The voxels as (X, Y, Z) or (X, Y, Z, C): a 2D file gets Z=1, singleton axes after Z go, RGB24 voxels
    become 3 channels (R, G, B)."""
    if names := data.dtype.names:
        data = np.stack([np.asarray(data[n]) for n in names], axis=-1)
        head.warnings.append(f"{'/'.join(names)} colour voxels are read as {len(names)} channels")
    if data.dtype.kind == "f" and data.dtype.itemsize > 8:
        data = data.astype(np.float64)  # float128: nothing downstream takes it
    target = (*head.shape, head.channels) if head.has_channel_axis else head.shape
    return data.reshape(target)


def load_nifti(path: str | Path, as_labels: bool | None = None) -> Volume:
    """Read a 2D, 3D or 4D NIfTI file (checked by :func:`read_header` first). ``as_labels=None`` decides from the
    name and the values.

    A volume is a label map when it holds integer values, at most 64 distinct ones, and either its name says so
    (``*label*``, ``*seg*``, ``*mask*``, a ``labelsTr/`` folder) or it has at most 64 values and is stored as an
    integer type. A uint8 T1 scan has far more distinct values, so it stays an image. NaN and infinite voxels are
    kept (they mean "no data" in many MRI files); :meth:`Volume.finite_range` counts them.
    """
    img, head = _open(path)
    path = head.path
    try:
        with _nibabel_notes(head.warnings):
            data = np.asarray(np.asanyarray(img.dataobj))
    except Exception as exc:
        raise _unreadable(path, exc) from None
    data = _channels_last(data, head)
    if as_labels is None:
        few_values = data.ndim == 3 and _integer_valued(data) and len(np.unique(data)) <= MAX_LABEL_VALUES
        as_labels = few_values and (looks_like_label_name(path) or data.dtype.kind in "iub")
    elif as_labels and not (data.ndim == 3 and _integer_valued(data)):
        raise BloodcellInputError(f"cannot be a label map: needs a 3D volume of finite integer values (got "
                                  f"{data.dtype}{', shape ' + str(data.shape) if data.ndim != 3 else ''})", path)
    if as_labels:
        data = _smallest_label_dtype(np.round(data) if data.dtype.kind == "f" else data, path)
    return Volume(data=data, affine=head.affine, spacing=head.spacing, orientation=head.orientation,
                  is_label_map=bool(as_labels), path=path, warnings=head.warnings, intent_name=head.intent_name,
                  oriented=head.oriented)


def affine_from_scale_translate(scale: tuple[float, ...], translate: tuple[float, ...]) -> np.ndarray:
    """The axis-aligned affine napari's scale/translate describe (for layers that have no source affine)."""
    affine = np.eye(4)
    affine[[0, 1, 2], [0, 1, 2]] = np.asarray(scale, dtype=np.float64)[-3:]
    affine[:3, 3] = np.asarray(translate, dtype=np.float64)[-3:]
    return affine


def nifti_bytes(data: np.ndarray, affine: np.ndarray, gz: bool, is_label_map: bool = False) -> bytes:
    """Encode a volume; label maps get the smallest unsigned type and an intent that says so."""
    import nibabel as nib

    affine = check_affine(affine)
    arr = np.asarray(data)
    if is_label_map:
        if not _integer_valued(arr):
            raise BloodcellInputError(f"a label map must hold integers; got dtype {arr.dtype}")
        arr = _smallest_label_dtype(arr)
    try:
        with _nibabel_notes([]):
            img = nib.Nifti1Image(arr, affine)
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
            if is_label_map:
                img.header.set_intent("label")
            raw = img.to_bytes()
    except Exception as exc:  # nibabel's HeaderDataError prints the matrix over several lines
        raise BloodcellInputError(f"cannot encode NIfTI: {_why(exc)}") from None
    return gzip.compress(raw, compresslevel=6, mtime=0) if gz else raw


def check_savable(affine: np.ndarray, path: str | Path | None = None) -> None:
    """Encode a one-voxel label map with ``affine``: a job that will save on this grid refuses before it runs."""
    try:
        nifti_bytes(np.zeros((1, 1, 1), np.uint8), affine, gz=False, is_label_map=True)
    except BloodcellInputError as exc:
        raise BloodcellInputError(f"a label map could not be saved on its grid: {exc.problem}", path) from None


def save_nifti(
    data: np.ndarray, affine: np.ndarray, path: str | Path, is_label_map: bool = False, exist: ExistPolicy = "refuse"
) -> Path:
    path = Path(path)
    if not is_nifti_path(path):
        raise BloodcellInputError("must end in .nii or .nii.gz", path)
    gz = path.name.lower().endswith(".gz")
    return atomic_write_bytes(path, nifti_bytes(data, affine, gz, is_label_map), exist=exist)
