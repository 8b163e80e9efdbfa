"""Which image a review belongs to: a content hash of the file, or for a whole-slide scan or an OME-Zarr folder a
cheap identity digest read in milliseconds, so the GUI never hashes gigabytes on its own thread."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

_DIGESTS: dict[tuple, str] = {}
"""File digests of this session by (path, size, mtime): a file is hashed once, not at every region opened."""
WHOLE_HASH_BYTES = 64 << 20
"""Files up to this size are hashed whole (about 40 ms); larger ones (a whole-slide scan of gigabytes, which the
GUI opens on its own thread) and folders (OME-Zarr) get an identity digest instead, see :func:`identity_digest`."""
_SAMPLES = 16
_SAMPLE_BYTES = 1 << 20


def image_digest(path: str | Path | None = None, array: np.ndarray | None = None, length: int = 16) -> str:
    """Content hash of an image file (or of pixel data when there is no file); above :data:`WHOLE_HASH_BYTES`,
    and for a folder, the :func:`identity_digest`. Every caller gets the same digest for the same file."""
    h = hashlib.sha256()
    if path is not None:
        if os.path.isdir(path):  # (not kept: a folder's time stamp does not change with the files in it)
            return identity_digest(path, length)
        stat = os.stat(path)
        known = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, length)
        if known not in _DIGESTS:
            if stat.st_size > WHOLE_HASH_BYTES:
                _DIGESTS[known] = identity_digest(path, length)
            else:
                with open(path, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
                _DIGESTS[known] = h.hexdigest()[:length]
        return _DIGESTS[known]
    if array is not None:
        a = np.ascontiguousarray(array)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    else:
        raise ValueError("image_digest needs a path or an array")
    return h.hexdigest()[:length]


def identity_digest(path: str | Path, length: int = 16) -> str:
    """A cheap digest of a very large file or an image folder, read in milliseconds: a file's size and 16 samples
    of a megabyte spread over it (the first and last included: the header and the tile index); a folder's
    (OME-Zarr) names, kinds and sizes two levels deep and its small metadata files (``.zattrs``, ``.zarray``,
    ``zarr.json`` ...). The modification time is left out, so a copy of the scan still finds its review; a change
    to pixels that no sample covers goes unnoticed, which a hash of gigabytes on every open would have caught."""
    h = hashlib.sha256(b"identity-v1")
    path = Path(path)
    if path.is_dir():
        for entry in _folder_entries(path, depth=2):
            h.update(repr(entry).encode("utf-8", "surrogatepass"))
        return h.hexdigest()[:length]
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        h.update(str(size).encode())
        last = max(size - _SAMPLE_BYTES, 0)
        for k in range(_SAMPLES):
            fh.seek(last * k // (_SAMPLES - 1))
            h.update(fh.read(_SAMPLE_BYTES))
    return h.hexdigest()[:length]


_ZARR_METADATA = {".zattrs", ".zgroup", ".zarray", ".zmetadata", "zarr.json"}


def _folder_entries(folder: Path, depth: int, limit: int = 200) -> list[tuple]:
    """(relative name, kind, size, metadata text) of a folder's entries ``depth`` levels deep, at most ``limit``
    per folder (a level of a pyramid holds thousands of chunk files: their count and the first names stand in)."""
    out: list[tuple] = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return out
    out.append(("", "count", len(entries)))
    for entry in entries[:limit]:
        try:
            if entry.is_dir():
                out.append((entry.name, "dir"))
                if depth > 1:
                    out.extend((f"{entry.name}/{e[0]}", *e[1:]) for e in _folder_entries(Path(entry.path), depth - 1))
                continue
            size = entry.stat().st_size
            small = entry.name in _ZARR_METADATA and size <= _SAMPLE_BYTES
            out.append((entry.name, "file", size, Path(entry.path).read_bytes() if small else b""))
        except OSError:
            out.append((entry.name, "unreadable"))
    return out
