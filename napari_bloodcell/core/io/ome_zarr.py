"""OME-Zarr folders (NGFF 0.4 on Zarr v2, 0.5 on Zarr v3) opened as lazy pyramids, with zarr alone.

The ``multiscales`` metadata (``.zattrs``, or ``zarr.json``'s ``attributes.ome``) is read with the project's
bounded JSON reader before zarr sees the folder, and every value in it is checked: the dataset paths must be plain
relative names that resolve inside the folder (no ``..``, no absolute path, no link leading out), every dataset
must be an array with bounded metadata, and the levels must shrink consistently (:func:`.pyramid.check_levels`).
Only the first multiscale image is opened; time and z axes are read at index 0.

zarr reads every file through :class:`_GuardedStore`, never its plain local store (which follows links and opens
FIFOs and devices): each file must be a regular file inside the folder, metadata at most :data:`META_BYTES`, a chunk
at most its decoded size plus compression overhead, and a compressed chunk must say (or be checked to) decode to no
more than the array's chunk shape × pixel size before zarr decodes it. Sharded arrays and chains of several
compressors are refused (their decoded size cannot be bounded that way).
"""

from __future__ import annotations

import asyncio
import bz2
import lzma
import math
import os
import re
import stat
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BloodcellInputError
from ..untrusted import is_regular_file, load_json
from .pyramid import MAX_CHUNK_BYTES, MAX_LEVELS, Level, Pyramid, check_levels

META_BYTES = 1024 * 1024
"""Zarr metadata files are a few kilobytes; larger ones are refused before they are parsed."""
_DATASET_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}(/[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}){0,7}")
_AXIS_TYPES = {"space", "time", "channel"}


def is_ome_zarr(path: str | Path) -> bool:
    """A folder with Zarr group metadata (``.zattrs`` or ``zarr.json``); cheap, never raises."""
    path = Path(path)
    try:
        return path.is_dir() and (is_regular_file(path / ".zattrs") or is_regular_file(path / "zarr.json"))
    except OSError:
        return False


def read_multiscales(path: Path) -> tuple[list[str], str | None]:
    """The first multiscale image's dataset paths (full resolution first) and its axes (e.g. ``CYX``; None when
    the metadata names none), checked."""
    if is_regular_file(path / "zarr.json"):
        meta = load_json(path / "zarr.json", META_BYTES)
        attrs = meta.get("attributes", {}) if isinstance(meta, dict) else None
        if isinstance(attrs, dict) and isinstance(attrs.get("ome"), dict):
            attrs = attrs["ome"]
    elif is_regular_file(path / ".zattrs"):
        attrs = load_json(path / ".zattrs", META_BYTES)
    else:
        raise BloodcellInputError("is not an OME-Zarr folder (no .zattrs or zarr.json)", path)
    multiscales = attrs.get("multiscales") if isinstance(attrs, dict) else None
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        raise BloodcellInputError("is a Zarr folder without OME 'multiscales' metadata; cannot open it as an "
                                  "image", path)
    first = multiscales[0]
    datasets = first.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise BloodcellInputError("OME-Zarr 'multiscales' lists no datasets", path)
    if len(datasets) > MAX_LEVELS:
        raise BloodcellInputError(f"OME-Zarr lists {len(datasets)} levels (at most {MAX_LEVELS})", path)
    paths = [_dataset_path(d, path) for d in datasets]
    return paths, _axes(first.get("axes"), path)


def _dataset_path(entry: Any, folder: Path) -> str:
    raw = entry.get("path") if isinstance(entry, dict) else None
    if not isinstance(raw, str) or not _DATASET_PATH.fullmatch(raw) or ".." in raw.split("/"):
        shown = repr(raw)[:80]
        raise BloodcellInputError(f"OME-Zarr dataset path {shown} is not a plain relative name inside the folder",
                                  folder)
    root = folder.resolve()
    resolved = (folder / raw).resolve()
    if root not in resolved.parents:
        raise BloodcellInputError(f"OME-Zarr dataset path {raw!r} leads outside the folder", folder)
    return raw


def _axes(raw: Any, folder: Path) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not 2 <= len(raw) <= 5:
        raise BloodcellInputError("OME-Zarr 'axes' must list 2 to 5 axes", folder)
    names = []
    for axis in raw:
        name = axis.get("name") if isinstance(axis, dict) else axis
        kind = axis.get("type") if isinstance(axis, dict) else None
        if not isinstance(name, str) or len(name) != 1 or name.lower() not in "tczyx":
            raise BloodcellInputError(f"OME-Zarr axis {repr(name)[:40]} is not one of t, c, z, y, x", folder)
        if kind is not None and kind not in _AXIS_TYPES:
            raise BloodcellInputError(f"OME-Zarr axis {name!r} has unknown type {repr(kind)[:40]}", folder)
        names.append(name.upper())
    if len(set(names)) != len(names):
        raise BloodcellInputError(f"OME-Zarr axes {''.join(names)!r} repeat an axis", folder)
    return "".join(names)


def _guess_axes(ndim: int, shape: tuple[int, ...]) -> str:
    """Axes of a pre-0.4 OME-Zarr (no ``axes``): TCZYX order, last ones kept; a last axis of 3 or 4 is RGB(A)."""
    if ndim == 3 and shape[-1] in (3, 4) and shape[0] > 4:
        return "YXC"
    return "TCZYX"[-ndim:]


_META_NAMES = ("zarr.json", ".zarray", ".zattrs", ".zgroup")
_COMPRESSORS = frozenset({"zlib", "gzip", "bz2", "lzma", "blosc", "lz4", "zstd"})
_OTHER_CODECS = frozenset({"bytes", "endian", "transpose", "crc32c", "sharding_indexed", "delta", "shuffle",
                           "fixedscaleoffset", "quantize", "bitround", "astype"})
"""Codecs that change a chunk's size by a bounded amount or not at all (sharding is refused separately)."""


def _compressor(meta: Any, name: str, folder: Path) -> str | None:
    """The one compressor of an array's metadata (v2 ``compressor`` and ``filters``, v3 ``codecs``), or None."""
    if not isinstance(meta, dict):
        raise BloodcellInputError(f"OME-Zarr dataset {name!r} has metadata that is not a JSON object", folder)
    if "codecs" in meta:
        codecs = meta["codecs"] if isinstance(meta["codecs"], list) else [None]
        ids = [c.get("name") if isinstance(c, dict) else c for c in codecs]
    else:
        extra = meta.get("filters") or []
        ids = [c.get("id") if isinstance(c, dict) else c for c in [meta.get("compressor"), *extra]
               if c is not None] if isinstance(extra, list) else [None]
    if "sharding_indexed" in ids:
        raise BloodcellInputError(f"OME-Zarr dataset {name!r} is sharded; sharded arrays are not supported",
                                  folder)
    if not all(isinstance(i, str) for i in ids):
        raise BloodcellInputError(f"OME-Zarr dataset {name!r} names its codecs wrongly", folder)
    unknown = [i for i in ids if i not in _COMPRESSORS and i not in _OTHER_CODECS]
    if unknown:  # a codec whose decoded size this reader cannot bound
        raise BloodcellInputError(f"OME-Zarr dataset {name!r} uses the codec {unknown[0][:40]!r}, which is not "
                                  "supported", folder)
    squeezed = [i for i in ids if i in _COMPRESSORS]
    if len(squeezed) > 1:
        raise BloodcellInputError(f"OME-Zarr dataset {name!r} chains the compressors {squeezed}; at most one is "
                                  "supported", folder)
    return squeezed[0] if squeezed else None


def _zstd_content_size(data: bytes) -> int | None:
    """The decoded size a zstd frame header declares (None: not declared)."""
    if len(data) < 6 or data[:4] != b"\x28\xb5\x2f\xfd":
        raise ValueError("the chunk is not a zstd frame")
    desc = data[4]
    fcs_flag, single = desc >> 6, (desc >> 5) & 1
    size = (1 if single else 0) if fcs_flag == 0 else (1, 2, 4, 8)[fcs_flag]
    if not size:
        return None
    at = 5 + (0 if single else 1) + (0, 1, 2, 4)[desc & 3]
    if len(data) < at + size:
        raise ValueError("the zstd frame header is cut short")
    value = int.from_bytes(data[at:at + size], "little")
    return value + 256 if size == 2 else value


def decoded_size(data: bytes, compressor: str, limit: int) -> int:
    """How many bytes ``data`` decodes to with ``compressor``, found without decoding more than ``limit + 1``
    bytes: from the header where the format declares it (blosc, lz4, zstd), else by a bounded streaming decode."""
    if compressor == "blosc":
        if len(data) < 16:
            raise ValueError("the blosc chunk is cut short")
        return int.from_bytes(data[4:8], "little")
    if compressor == "lz4":
        if len(data) < 4:
            raise ValueError("the lz4 chunk is cut short")
        return int.from_bytes(data[:4], "little")
    if compressor == "zstd":
        size = _zstd_content_size(data)
        if size is None:
            raise ValueError("the zstd chunk does not declare its decoded size")
        return size
    try:
        if compressor in ("zlib", "gzip"):
            return len(zlib.decompressobj(47).decompress(data, limit + 1))  # 47: zlib or gzip header
        if compressor == "bz2":
            return len(bz2.BZ2Decompressor().decompress(data, max_length=limit + 1))
        return len(lzma.LZMADecompressor().decompress(data, max_length=limit + 1))
    except (zlib.error, OSError, EOFError, lzma.LZMAError) as exc:
        raise ValueError(f"the {compressor} chunk is corrupt ({exc})") from None


def _guarded_store_class() -> type:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import LocalStore

    class _GuardedStore(LocalStore):
        """zarr's local store reading only regular files inside its folder, each bounded in size (see the module
        docstring); :attr:`chunk_bytes` and :attr:`compressor` are set once the array's metadata is checked."""

        chunk_bytes: int | None = None
        compressor: str | None = None

        async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Any:
            if byte_range is not None:
                raise ValueError("partial chunk reads are not supported")
            if prototype is None:
                prototype = default_buffer_prototype()
            data = await asyncio.to_thread(self._read_checked, key)
            return None if data is None else prototype.buffer.from_bytes(data)

        def _read_checked(self, key: str) -> bytes | None:
            root = Path(self.root).resolve()
            path = (root / key).resolve()
            if root not in path.parents:
                raise ValueError(f"{key!r} leads outside the folder")
            is_meta = key.rsplit("/", 1)[-1] in _META_NAMES
            decoded = None if is_meta else self.chunk_bytes
            if decoded is None and not is_meta:
                raise ValueError(f"{key!r} is read before its array's metadata")
            limit = META_BYTES if decoded is None else min(decoded + decoded // 8 + 65536, 2 * MAX_CHUNK_BYTES)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return None  # a missing chunk is the fill value, as zarr says
            with os.fdopen(fd, "rb") as fh:
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise ValueError(f"{key!r} is not a regular file")
                if st.st_size > limit:
                    raise ValueError(f"{key!r} holds {st.st_size} bytes, above the {limit} expected")
                data = fh.read(limit + 1)
            if len(data) > limit:
                raise ValueError(f"{key!r} grew past {limit} bytes while read")
            if decoded is not None and self.compressor is not None:  # uncompressed: zarr checks the length
                size = decoded_size(data, self.compressor, decoded)
                if size > decoded:
                    raise ValueError(f"chunk {key!r} decodes to more than the {decoded} bytes of one chunk")
            return data

    return _GuardedStore


def _open_array(folder: Path, name: str) -> Any:
    import zarr

    where = folder / name
    metas = [where / m for m in ("zarr.json", ".zarray") if is_regular_file(where / m)]
    if not metas:
        raise BloodcellInputError(f"OME-Zarr dataset {name!r} is listed but holds no array", folder)
    # NaN, deep nesting, huge numbers and files over META_BYTES refused before zarr parses them
    compressor = [_compressor(load_json(meta, META_BYTES), name, folder) for meta in metas][0]
    try:
        store = _guarded_store_class()(where, read_only=True)
        array = zarr.open_array(store=store, mode="r")
        chunks = tuple(int(c) for c in array.chunks)
        store.chunk_bytes = math.prod(chunks) * int(np.dtype(array.dtype).itemsize)
        store.compressor = compressor
    except Exception as exc:
        raise BloodcellInputError(f"OME-Zarr dataset {name!r} cannot be opened: "
                                  f"{' '.join(str(exc).split())[:200]}", folder) from None
    return array


def open_ome_zarr(path: str | Path) -> Pyramid:
    """An OME-Zarr folder as a :class:`~.pyramid.Pyramid` (see the module docstring for what is checked)."""
    path = Path(path)
    names, axes = read_multiscales(path)
    arrays = [_open_array(path, name) for name in names]
    shapes = [tuple(int(n) for n in a.shape) for a in arrays]
    if axes is None:
        axes = _guess_axes(len(shapes[0]), shapes[0])
    for name, shape in zip(names, shapes):
        if len(shape) != len(axes):
            raise BloodcellInputError(f"OME-Zarr dataset {name!r} has {len(shape)} dimensions where the axes are "
                                      f"{axes!r}", path)
    yx = [(dict(zip(axes, s)).get("Y", 0), dict(zip(axes, s)).get("X", 0)) for s in shapes]
    check_levels(yx, path)
    levels = [Level(a, axes, path) for a in arrays]
    if len({(lv.dtype, lv.channels) for lv in levels}) != 1:
        raise BloodcellInputError("OME-Zarr levels differ in pixel type or channels", path)
    return Pyramid(path, "ome-zarr", levels)
