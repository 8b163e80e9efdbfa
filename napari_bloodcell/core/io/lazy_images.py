"""Large images read region by region: a 20000×20000 scan opens from its header and is decoded only where it is
looked at or detected on.

:func:`open_image` checks the header against the pixel limit (as every read does) and returns a
:class:`LazyImage` with ``shape``, ``dtype``, ``read(y0, y1, x0, x1)`` and a dask view for napari. Above
:func:`lazy_pixels` (64 megapixels unless ``BLOODCELL_LAZY_PIXELS`` says otherwise):

* a **tiled or strip-compressed TIFF** decodes only the tiles or strips a region touches, with tifffile's own
  per-segment decoder (no zarr needed);
* an **uncompressed TIFF** is read through a memory map made for each region and dropped after it, so only the
  rows and columns asked for are touched;
* **JPEG, PNG, BMP**, and TIFF layouts with several pages or planes, are decoded whole on first read: Pillow has no
  region decoding, so for them the pixel limit is the only bound on memory (convert such a scan once to a tiled
  pyramidal OME-TIFF with :mod:`.pyramid_write`).

Pyramidal TIFF / OME-TIFF and OME-Zarr slides are opened level by level by :mod:`.pyramid` (see
docs/large_images.md).

Smaller images are read whole (one decode is faster than many region reads).
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BloodcellInputError
from ..untrusted import max_pixels
from .images import ImageHeader, cannot_read, image_header, is_tiff_path, read_image

DEFAULT_LAZY_PIXELS = 64_000_000
"""Images with more pixels than this (8000×8000) are read region by region; ``BLOODCELL_LAZY_PIXELS`` overrides."""
CHUNK_SIDE = 2048
"""Side of the regions napari's dask view reads, rounded to whole tiles."""
STRIP_CHUNK_BYTES = 64 * 1024 * 1024
"""Strips span the full width, so a dask chunk of a strip TIFF is a band of whole strips of about this size."""
JPEG_COMPRESSIONS = {6, 7, 34892, 33007}


def lazy_pixels() -> int:
    """Pixel count above which :func:`open_image` reads region by region (``BLOODCELL_LAZY_PIXELS``)."""
    raw = os.environ.get("BLOODCELL_LAZY_PIXELS", "").strip()
    if not raw:
        return DEFAULT_LAZY_PIXELS
    try:
        return max(0, int(float(raw)))
    except (ValueError, OverflowError):
        raise BloodcellInputError(f"BLOODCELL_LAZY_PIXELS={raw!r} is not a number of pixels") from None


def file_token(path: str | Path, *extra: Any) -> str:
    """A dask name part that is stable for one version of a file or folder (its path, mtime and size)."""
    from dask.base import tokenize

    stat = os.stat(path)
    return tokenize(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size, *extra)


class RegionReader:
    """Numpy-style indexing and a dask view over ``read(y0, y1, x0, x1)``, shared by :class:`LazyImage` and a
    pyramid's levels (:class:`.pyramid.Level`); they set ``shape``, ``ndim`` and ``dtype``."""

    shape: tuple[int, ...]
    ndim: int
    dtype: np.dtype

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, key: Any) -> np.ndarray:
        key = _full_key(key, self.ndim)
        bounds, post = [], []
        for k, n in zip(key[:2], self.shape[:2]):
            if isinstance(k, int | np.integer):
                i = int(k) + n if k < 0 else int(k)
                if not 0 <= i < n:
                    raise IndexError(f"index {k} is out of bounds for size {n}")
                bounds.append((i, i + 1))
                post.append(0)
            elif isinstance(k, slice) and (k.step or 1) > 0:
                start, stop, step = k.indices(n)
                bounds.append((start, max(start, stop)))
                post.append(slice(None, None, step))
            else:  # negative steps, index arrays: read the axis, let numpy pick
                bounds.append((0, n))
                post.append(k)
        data = self.read(bounds[0][0], bounds[0][1], bounds[1][0], bounds[1][1])
        return data[tuple(post) + tuple(key[2:])]

    def dask_view(self, name: str, chunks: tuple[int, ...]) -> Any:
        """A dask array of ``self`` in ``chunks``, each read only when napari (or detection) asks for it."""
        import dask.array as da

        return da.from_array(self, chunks=chunks, name=name, asarray=False, fancy=False, lock=False,
                             meta=np.empty((0,) * self.ndim, dtype=self.dtype))


class LazyImage(RegionReader):
    """An image file read region by region, in display layout ((H, W) grey or (H, W, 3) RGB, alpha dropped).

    ``lazy`` says whether a region read decodes only what it touches (tiled/strip/uncompressed TIFF above the
    threshold) or the whole image once (kept until :meth:`close`). Indexing with slices reads that region, so the
    object can back a dask array (:meth:`to_dask`) that napari slices.
    """

    def __init__(self, path: Path, header: ImageHeader, backend: Any) -> None:
        self.path, self.header, self._backend = path, header, backend
        self.shape: tuple[int, ...] = header.shape
        self.dtype = np.dtype(header.dtype)
        self.ndim = len(self.shape)

    @property
    def lazy(self) -> bool:
        return bool(self._backend.lazy)

    @property
    def chunks(self) -> tuple[int, int]:
        """The region size one read is cheapest at (whole tiles or strips)."""
        return self._backend.chunks

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows ``y0:y1`` and columns ``x0:x1`` (clipped to the image), decoding only what they touch."""
        h, w = self.shape[:2]
        y0, y1 = max(0, min(int(y0), h)), max(0, min(int(y1), h))
        x0, x1 = max(0, min(int(x0), w)), max(0, min(int(x1), w))
        if y1 <= y0 or x1 <= x0:
            return np.zeros((max(0, y1 - y0), max(0, x1 - x0), *self.shape[2:]), dtype=self.dtype)
        try:
            data = self._backend.read(y0, y1, x0, x1)
        except Exception as exc:  # a broken tile deep in the file is found only when it is read
            raise cannot_read(exc, self.path) from None
        return data if data.dtype == self.dtype else data.astype(self.dtype)

    def asarray(self) -> np.ndarray:
        return self.read(0, self.shape[0], 0, self.shape[1])

    def to_dask(self):
        """A dask array of the image in chunks of :attr:`chunks`, each read only when napari shows it."""
        rows, cols = self.chunks
        chunks = (rows, cols, *self.shape[2:])
        return self.dask_view("bloodcell-image-" + file_token(self.path, chunks), chunks)

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> LazyImage:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LazyImage({str(self.path)!r}, shape={self.shape}, dtype={self.dtype}, lazy={self.lazy})"


def _full_key(key: Any, ndim: int) -> tuple:
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        i = next(j for j, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1:]
    if len(key) > ndim:
        raise IndexError(f"too many indices for an image of {ndim} dimensions")
    return key + (slice(None),) * (ndim - len(key))


class _Whole:
    """Decoded whole by :func:`read_image` on first read and kept: Pillow cannot decode a region."""

    lazy = False

    def __init__(self, path: Path, header: ImageHeader) -> None:
        self.path, self.chunks = path, (header.shape[0], header.shape[1])
        self._data: np.ndarray | None = None
        self._lock = threading.Lock()

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        with self._lock:
            if self._data is None:
                self._data = read_image(self.path)
        return self._data[y0:y1, x0:x1]

    def close(self) -> None:
        self._data = None


class _TiffRegions:
    """The first page of a TIFF read by tile or strip (or through a memory map when stored uncompressed)."""

    lazy = True

    def __init__(self, path: Path, tif: Any, page: Any) -> None:
        self.path, self._tif, self._page = path, tif, page
        self._lock = threading.Lock()
        sep, _, height, width, contig = (int(v) for v in page.shaped)
        self.sep, self.contig, self.height, self.width = sep, contig, height, width
        self.itemsize = np.dtype(page.dtype).itemsize * sep * contig
        self.mapped = bool(page.is_final and page.parent.filehandle.is_file)
        if page.is_tiled:
            self.seg_h, self.seg_w = int(page.tilelength), int(page.tilewidth)
        else:
            self.seg_h, self.seg_w = max(1, min(int(page.rowsperstrip or height), height)), width
        if self.seg_h * self.seg_w > max_pixels():
            raise BloodcellInputError(f"cannot read image: a TIFF tile or strip of {self.seg_w}x{self.seg_h} "
                                      "pixels is above the pixel limit (BLOODCELL_MAX_PIXELS)", path)
        self.rows, self.cols = math.ceil(height / self.seg_h), math.ceil(width / self.seg_w)
        if not self.mapped and len(page.dataoffsets) < sep * self.rows * self.cols:
            raise BloodcellInputError(f"cannot read image: the TIFF stores {len(page.dataoffsets)} tiles or strips "
                                      f"where its size needs {sep * self.rows * self.cols}", path)
        self._decode_args: dict[str, Any] = {}
        if page.compression in JPEG_COMPRESSIONS:
            self._decode_args = {"jpegtables": page.jpegtables, "jpegheader": page.jpegheader}

    @classmethod
    def open(cls, path: Path) -> _TiffRegions | None:
        """Region reading for a single-page 2D TIFF; None for layouts read whole (pages, depth, odd series)."""
        import tifffile

        tif = tifffile.TiffFile(path)
        try:
            series = tif.series[0]
            page = series.keyframe
            if (len(series.pages) != 1 or not isinstance(series.pages[0], tifffile.TiffPage)
                    or int(page.imagedepth) != 1 or page.dtype is None
                    or tuple(series.shape) != tuple(page.shape)):
                tif.close()
                return None
            return cls(path, tif, page)
        except BaseException:
            tif.close()
            raise

    @property
    def chunks(self) -> tuple[int, int]:
        if self.mapped:
            return min(CHUNK_SIDE, self.height), min(CHUNK_SIDE, self.width)
        if self.seg_w >= self.width:  # strips: bands of whole strips, full width
            rows = max(1, STRIP_CHUNK_BYTES // max(1, self.width * self.itemsize * self.seg_h)) * self.seg_h
            return min(rows, self.height), self.width
        k = max(1, CHUNK_SIDE // max(self.seg_h, self.seg_w))
        return min(k * self.seg_h, self.height), min(k * self.seg_w, self.width)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        data = self._mapped(y0, y1, x0, x1) if self.mapped else self._segments(y0, y1, x0, x1)
        # (separate samples, rows, columns, contiguous samples) -> (rows, columns, samples), display layout
        data = np.moveaxis(data, 0, -2).reshape(y1 - y0, x1 - x0, self.sep * self.contig)
        samples = data.shape[-1]
        if samples in (1, 2):
            return np.ascontiguousarray(data[..., 0])  # grey, grey + alpha
        return np.ascontiguousarray(data[..., :3])

    def _mapped(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        page = self._page
        stored = np.dtype(page.dtype).newbyteorder(page.parent.byteorder)
        mm = np.memmap(self.path, dtype=stored, mode="r", offset=int(page.dataoffsets[0]),
                       shape=(self.sep, self.height, self.width, self.contig))
        try:
            return np.array(mm[:, y0:y1, x0:x1], dtype=np.dtype(page.dtype).newbyteorder("="))
        finally:
            del mm  # unmapped now: the pages read do not stay in this process's memory

    def _segments(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        page = self._page
        out = np.zeros((self.sep, y1 - y0, x1 - x0, self.contig), dtype=page.dtype)
        offsets, counts = page.dataoffsets, page.databytecounts
        decode = page.decode
        fh = self._tif.filehandle
        for s in range(self.sep):
            for ty in range(y0 // self.seg_h, (y1 - 1) // self.seg_h + 1):
                for tx in range(x0 // self.seg_w, (x1 - 1) // self.seg_w + 1):
                    index = (s * self.rows + ty) * self.cols + tx
                    data = None
                    if counts[index]:
                        with self._lock:
                            fh.seek(int(offsets[index]))
                            data = fh.read(int(counts[index]))
                    segment, where, _ = decode(data, index, **self._decode_args)
                    if segment is None:
                        continue  # an empty tile: left as zeros
                    segment = segment.reshape(-1, *segment.shape[-3:])[0]  # (rows, columns, contig samples)
                    top, left = int(where[2]), int(where[3])
                    a0, a1 = max(y0, top), min(y1, top + segment.shape[0])
                    b0, b1 = max(x0, left), min(x1, left + segment.shape[1])
                    if a1 > a0 and b1 > b0:
                        out[s, a0 - y0:a1 - y0, b0 - x0:b1 - x0] = segment[a0 - top:a1 - top, b0 - left:b1 - left]
        return out

    def close(self) -> None:
        self._tif.close()


def open_image(path: str | Path, lazy: bool | None = None) -> LazyImage:
    """``path`` as a :class:`LazyImage`: header read and checked against the pixel limit now, pixels on demand.

    ``lazy=None`` reads region by region above :func:`lazy_pixels`; ``True``/``False`` force it (where the format
    allows region reads at all)."""
    path = Path(path)
    header = image_header(path)
    want = header.pixels > lazy_pixels() if lazy is None else lazy
    backend: Any = None
    if want and is_tiff_path(path):
        try:
            backend = _TiffRegions.open(path)
        except Exception as exc:
            raise cannot_read(exc, path) from None
        if backend is not None and (backend.height, backend.width) != header.shape[:2]:
            backend.close()  # the file changed since its header was checked
            raise BloodcellInputError("cannot read image: it changed while being opened", path)
    return LazyImage(path, header, backend or _Whole(path, header))
