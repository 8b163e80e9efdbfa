"""Whole-slide images opened lazily as pyramids: pyramidal TIFF / OME-TIFF and OME-Zarr folders.

:func:`open_pyramid` reads only metadata and returns a :class:`Pyramid` of :class:`Level` objects, full
resolution first. Each level reads a region by decoding only the chunks (TIFF tiles, Zarr chunks) it touches,
through zarr (tifffile's ``aszarr`` store for TIFF), and gives napari a dask view (:meth:`Level.to_dask`). Level 0
is a lazy field that :func:`..inference.detect.detect_array` detects on band by band, so a 40,000×40,000 slide is
detected in bounded memory.

Everything a file says is data: the number of levels, their shapes, chunk sizes, dtypes, axes and (for OME-Zarr)
array paths are checked before a pixel is read (:func:`check_levels`), and any refusal is one
:class:`~..errors.BloodcellInputError` line naming the file.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BloodcellInputError
from ..untrusted import check_pixels
from .images import cannot_read, is_tiff_path
from .lazy_images import RegionReader, file_token

MAX_LEVELS = 24
"""A 2^24-times reduction is far past a thumbnail: more levels is a broken or hostile file."""
MAX_CHUNK_BYTES = 256 * 1024 * 1024
"""Largest decoded chunk (a TIFF tile or strip, a Zarr chunk) accepted: one chunk is decoded whole on any read."""
DASK_CHUNK_ROWS, DASK_CHUNK_COLS = 512, 4096
"""Dask chunks napari and detection read, rounded to whole file chunks: few rows, so that a band of detection
tiles (the starter's 575 rows) decodes about the tile rows it needs, as a direct read would, and wide, so that
there are not too many chunks."""
PIXEL_AXES = frozenset("YX")
CHANNEL_AXES = frozenset("CS")


class Level(RegionReader):
    """One resolution level in display layout ((H, W) grey or (H, W, 3) RGB), read region by region from a
    zarr-like array whose axes are named by ``axes`` (TIFF: ``YXS``, ``SYX``, ``TCZYX`` ...; other axes than Y, X
    and channels are read at index 0)."""

    def __init__(self, array: Any, axes: str, path: Path, lock: threading.Lock | None = None) -> None:
        self.array, self.axes, self.path, self._lock = array, axes.upper(), path, lock
        shape = tuple(int(n) for n in array.shape)
        if len(shape) != len(self.axes) or not 2 <= len(shape) <= 6:
            raise BloodcellInputError(f"cannot read image: array of shape {shape} does not match axes {axes!r}",
                                      path)
        if self.axes.count("Y") != 1 or self.axes.count("X") != 1 or sum(a in CHANNEL_AXES for a in self.axes) > 1:
            raise BloodcellInputError(f"cannot read image: axes {axes!r} need one Y, one X and at most one channel "
                                      "axis", path)
        dtype = np.dtype(array.dtype)
        if dtype.kind not in "uif" or dtype.itemsize > 8:
            raise BloodcellInputError(f"cannot read image: pixel type {dtype} is not supported", path)
        self.dtype = dtype
        sizes = dict(zip(self.axes, shape))
        self.height, self.width = sizes["Y"], sizes["X"]
        channel = next((a for a in self.axes if a in CHANNEL_AXES), None)
        self.channels = sizes[channel] if channel else 1
        if self.channels not in (1, 2, 3, 4):
            raise BloodcellInputError(f"cannot read image: {self.channels} channels (1 grey, 3 RGB, or with alpha "
                                      "are supported)", path)
        self.shape: tuple[int, ...] = ((self.height, self.width) if self.channels in (1, 2)
                                       else (self.height, self.width, 3))
        self.ndim = len(self.shape)
        chunks = tuple(int(c) for c in getattr(array, "chunks", shape))
        if len(chunks) != len(shape) or min(chunks) < 1:
            raise BloodcellInputError(f"cannot read image: chunk shape {chunks} does not fit shape {shape}", path)
        nbytes = math.prod(min(c, n) for c, n in zip(chunks, shape)) * dtype.itemsize
        if nbytes > MAX_CHUNK_BYTES:
            raise BloodcellInputError(f"cannot read image: one chunk {chunks} decodes to {nbytes / 2**20:.0f} MB, "
                                      f"above {MAX_CHUNK_BYTES // 2**20} MB; save it with smaller tiles", path)
        csize = dict(zip(self.axes, chunks))
        self.file_chunks = (min(csize["Y"], self.height), min(csize["X"], self.width))

    lazy = True

    @property
    def chunks(self) -> tuple[int, int]:
        """Region size of the dask view (:data:`DASK_CHUNK_ROWS` × :data:`DASK_CHUNK_COLS`, whole file chunks)."""
        ch, cw = self.file_chunks
        return (min(self.height, max(1, DASK_CHUNK_ROWS // ch) * ch),
                min(self.width, max(1, DASK_CHUNK_COLS // cw) * cw))

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows ``y0:y1`` and columns ``x0:x1`` (clipped), decoding only the chunks they touch."""
        y0, y1 = max(0, min(int(y0), self.height)), max(0, min(int(y1), self.height))
        x0, x1 = max(0, min(int(x0), self.width)), max(0, min(int(x1), self.width))
        if y1 <= y0 or x1 <= x0:
            return np.zeros((max(0, y1 - y0), max(0, x1 - x0), *self.shape[2:]), dtype=self.dtype)
        key = tuple(slice(y0, y1) if a == "Y" else slice(x0, x1) if a == "X" else
                    slice(None) if a in CHANNEL_AXES else 0 for a in self.axes)
        try:
            if self._lock is not None:
                with self._lock:
                    data = np.asarray(self.array[key])
            else:
                data = np.asarray(self.array[key])
        except Exception as exc:  # a broken or missing chunk is found only when it is read
            raise cannot_read(exc, self.path) from None
        kept = [a for a in self.axes if a in PIXEL_AXES or a in CHANNEL_AXES]
        order = [kept.index("Y"), kept.index("X")] + [i for i, a in enumerate(kept) if a in CHANNEL_AXES]
        data = np.transpose(data, order)
        if data.ndim == 3:
            data = data[..., 0] if self.channels in (1, 2) else data[..., :3]
        return np.ascontiguousarray(data, dtype=self.dtype)

    def to_dask(self, name: str) -> Any:
        """A dask array of the level in chunks of :attr:`chunks`; each chunk read only when napari shows it."""
        rows, cols = self.chunks
        return self.dask_view(name, (rows, cols, *self.shape[2:]))

    def __repr__(self) -> str:
        return f"Level({str(self.path)!r}, shape={self.shape}, dtype={self.dtype}, chunks={self.file_chunks})"


class Pyramid:
    """A slide's levels, full resolution first; close it (or use ``with``) to release the file."""

    def __init__(self, path: Path, kind: str, levels: list[Level], closer: Any = None) -> None:
        self.path, self.kind, self.levels, self._closer = path, kind, levels, closer

    @property
    def shape(self) -> tuple[int, ...]:
        return self.levels[0].shape

    def dask_levels(self) -> list[Any]:
        """The levels as dask arrays (napari's ``multiscale=True`` data); names are stable per file and level."""
        token = file_token(self.path)
        return [level.to_dask(f"bloodcell-pyramid-{token}-{i}") for i, level in enumerate(self.levels)]

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None

    def __enter__(self) -> Pyramid:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Pyramid({str(self.path)!r}, {self.kind}, levels={[lv.shape[:2] for lv in self.levels]})"


def check_levels(shapes: Sequence[tuple[int, int]], path: Path) -> None:
    """Refuse levels that are too many, over the pixel limit, or that do not shrink consistently (each level no
    larger than the one before, by about the same factor along both axes)."""
    if not shapes:
        raise BloodcellInputError("cannot read image: the pyramid has no levels", path)
    if len(shapes) > MAX_LEVELS:
        raise BloodcellInputError(f"cannot read image: {len(shapes)} pyramid levels (at most {MAX_LEVELS})", path)
    h0, w0 = shapes[0]
    check_pixels(w0, h0, path)
    for i, (h, w) in enumerate(shapes[1:], 1):
        ph, pw = shapes[i - 1]
        if h < 1 or w < 1 or h > ph or w > pw or (h, w) == (ph, pw):
            raise BloodcellInputError(f"cannot read image: pyramid level {i} is {w}x{h} after {pw}x{ph}; levels "
                                      "must shrink", path)
        fy, fx = h0 / h, w0 / w
        if abs(fy - fx) > max(fy, fx) * (0.02 + 2.0 / min(h, w)):
            raise BloodcellInputError(f"cannot read image: pyramid level {i} ({w}x{h}) is not the full image "
                                      f"({w0}x{h0}) reduced by one factor", path)


# ------------------------------------------------------------------------------------------------------- TIFF


def tiff_levels(path: Path) -> int:
    """How many resolution levels the first series of a TIFF has (1: a plain TIFF); reads the header only."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return len(tif.series[0].levels) if tif.series else 0
    except Exception as exc:
        raise cannot_read(exc, path) from None


def _open_tiff(path: Path) -> Pyramid:
    import tifffile
    import zarr

    tif = None
    try:
        tif = tifffile.TiffFile(path)  # inside the try: a file that is no TIFF at all is one line too
        if not tif.series:
            raise BloodcellInputError("cannot read image: the TIFF holds no image", path)
        series = tif.series[0]
        if len(series.levels) > MAX_LEVELS:
            raise BloodcellInputError(f"cannot read image: {len(series.levels)} pyramid levels (at most "
                                      f"{MAX_LEVELS})", path)
        axes = series.axes
        sizes = [dict(zip(axes, (int(n) for n in lv.shape))) for lv in series.levels]
        check_levels([(s.get("Y", 0), s.get("X", 0)) for s in sizes], path)
        lock = threading.Lock()  # one file handle: reads are serialised (each is a few tiles)
        levels = []
        for i, lv in enumerate(series.levels):
            if lv.axes != axes:
                raise BloodcellInputError(f"cannot read image: pyramid level {i} has axes {lv.axes!r}, level 0 "
                                          f"{axes!r}", path)
            if lv.dtype is None or np.dtype(lv.dtype) != np.dtype(series.dtype):
                raise BloodcellInputError(f"cannot read image: pyramid level {i} has pixel type {lv.dtype}", path)
            keyframe = lv.keyframe
            tile = ((int(keyframe.tilelength), int(keyframe.tilewidth)) if keyframe.is_tiled
                    else (int(keyframe.rowsperstrip or keyframe.imagelength), int(keyframe.imagewidth)))
            if tile[0] * tile[1] * max(1, int(keyframe.samplesperpixel)) * np.dtype(lv.dtype).itemsize \
                    > MAX_CHUNK_BYTES:
                raise BloodcellInputError(f"cannot read image: level {i} stores tiles or strips of {tile[1]}x"
                                          f"{tile[0]} pixels, above {MAX_CHUNK_BYTES // 2**20} MB each; save it "
                                          "tiled", path)
            store = series.aszarr(level=i)
            array = zarr.open_array(store, mode="r", zarr_format=2)
            levels.append(Level(array, axes, path, lock))
        return Pyramid(path, "tiff", levels, tif.close)
    except BaseException as exc:
        if tif is not None:
            tif.close()
        if isinstance(exc, Exception):
            raise cannot_read(exc, path) from None
        raise


# ------------------------------------------------------------------------------------------------------ entry


def is_pyramid_path(path: str | Path) -> bool:
    """An OME-Zarr folder, or a TIFF with more than one resolution level (header read); never raises."""
    from .ome_zarr import is_ome_zarr

    path = Path(path)
    try:
        if path.is_dir():
            return is_ome_zarr(path)
        return is_tiff_path(path) and path.is_file() and tiff_levels(path) > 1
    except Exception:
        return False


def open_pyramid(path: str | Path) -> Pyramid:
    """A pyramidal TIFF / OME-TIFF (any TIFF: a plain one is a pyramid of one level) or an OME-Zarr folder, opened
    lazily: metadata checked now, pixels read per region. Bad files raise one line naming the file."""
    from ..untrusted import regular_file

    path = Path(path)
    if path.is_dir():
        from .ome_zarr import open_ome_zarr

        return open_ome_zarr(path)
    if not is_tiff_path(path):
        raise BloodcellInputError("is neither a TIFF nor an OME-Zarr folder; cannot open it as a pyramid", path)
    regular_file(path)
    return _open_tiff(path)


@contextlib.contextmanager
def open_detection_field(path: str | Path) -> Iterator[Any]:
    """The field detection reads for ``path``: level 0 of a pyramid (lazy), a large image read region by region
    (:func:`.images.open_image`), or a small image's array; released when the block ends."""
    from .images import open_image

    path = Path(path)
    if is_pyramid_path(path):
        with open_pyramid(path) as pyramid:
            yield pyramid.levels[0]
        return
    with open_image(path) as image:
        yield image if image.lazy else image.asarray()
