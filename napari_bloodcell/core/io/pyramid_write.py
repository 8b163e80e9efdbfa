"""Any readable image to a tiled, pyramidal OME-TIFF, band by band: the one-step fix for scans that cannot be read
tile by tile (JPEG, PNG) and for plain TIFFs that should open in napari at every zoom.

The source is read one band of ``tile`` rows at a time where its format allows (tiled or strip TIFF, a pyramid's
level 0, OME-Zarr); a JPEG or PNG is decoded whole once (Pillow cannot decode a region: the pixel limit is then
the only bound on memory, see docs/large_images.md). Each band is cut into zlib-compressed tiles for level 0 and
halved (2×2 mean) into the next level's band, and so on down the levels, so memory stays at about one band per
level. Lower levels' tiles wait in a temporary spool file beside the output until their page is written, and the
output appears atomically (written to a hidden temporary name, synced, then linked into place by
:func:`..atomic.publish`; an existing file is refused).

    bloodcell pyramid SCAN.jpg SLIDE.ome.tif [--tile 512]
"""

from __future__ import annotations

import contextlib
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import publish
from ..errors import BloodcellInputError

DEFAULT_TILE = 512
SMALLEST_SIDE = 1024
"""Levels are halved until the next would be smaller than this on its longer side."""


def level_sizes(height: int, width: int, smallest: int = SMALLEST_SIDE) -> list[tuple[int, int]]:
    sizes = [(height, width)]
    while max(sizes[-1]) // 2 >= smallest:
        h, w = sizes[-1]
        sizes.append((max(1, h // 2), max(1, w // 2)))
    return sizes


def _halve(band: np.ndarray) -> np.ndarray:
    """2×2 mean of a band with an even number of rows (an odd last column dropped, as ``w // 2`` says)."""
    h, w = band.shape[0] // 2 * 2, band.shape[1] // 2 * 2
    b = band[:h, :w].astype(np.float32)
    out = (b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2]) / 4.0
    if np.issubdtype(band.dtype, np.integer):
        out = np.round(out)
    return out.astype(band.dtype)


class _Level:
    """One level's pending rows; full tile rows are encoded and either yielded (level 0) or spooled."""

    def __init__(self, size: tuple[int, int], tile: int, spool: Any | None) -> None:
        self.height, self.width = size
        self.tile, self.spool = tile, spool
        self.rows: list[np.ndarray] = []
        self.done = 0  # rows encoded
        self.index: list[tuple[int, int]] = []  # (offset, length) of each spooled tile
        self.carry: np.ndarray | None = None  # an odd last row of the band above, halved with the next band

    def add(self, band: np.ndarray) -> list[bytes]:
        band = band[: self.height - self.done - sum(r.shape[0] for r in self.rows), : self.width]
        if band.shape[0]:
            self.rows.append(band)
        out: list[bytes] = []
        pending = sum(r.shape[0] for r in self.rows)
        while pending >= self.tile or (pending and self.done + pending >= self.height):
            block = np.concatenate(self.rows) if len(self.rows) > 1 else self.rows[0]
            take = min(self.tile, block.shape[0])
            out.extend(self._encode(block[:take]))
            self.rows = [block[take:]] if take < block.shape[0] else []
            self.done += take
            pending -= take
        return out

    def _encode(self, rows: np.ndarray) -> list[bytes]:
        t = self.tile
        if rows.shape[0] < t:  # the last tile row is padded to whole tiles, as TIFF tiles are
            pad = np.zeros((t - rows.shape[0], *rows.shape[1:]), rows.dtype)
            rows = np.concatenate([rows, pad])
        tiles = []
        for x0 in range(0, self.width, t):
            piece = rows[:, x0:x0 + t]
            if piece.shape[1] < t:
                piece = np.concatenate([piece, np.zeros((t, t - piece.shape[1], *rows.shape[2:]), rows.dtype)], 1)
            data = zlib.compress(np.ascontiguousarray(piece).tobytes(), 6)
            if self.spool is None:
                tiles.append(data)
            else:
                self.index.append((self.spool.tell(), len(data)))
                self.spool.write(data)
        return tiles

    def replay(self) -> Iterator[bytes]:
        for offset, length in self.index:
            self.spool.seek(offset)
            yield self.spool.read(length)


def _source(path: Path) -> tuple[Any, Callable[[int, int], np.ndarray]]:
    """The field to convert (opened lazily where the format allows) and a reader of row bands."""
    from .pyramid import is_pyramid_path, open_pyramid

    if is_pyramid_path(path):
        pyramid = open_pyramid(path)
        level = pyramid.levels[0]
        return pyramid, lambda y0, y1: level.read(y0, y1, 0, level.width)
    from .images import open_image

    image = open_image(path, lazy=True)  # region reads for TIFF; a JPEG or PNG is decoded whole on first read
    return image, lambda y0, y1: image.read(y0, y1, 0, image.shape[1])


def write_pyramid(src: str | Path, out: str | Path, tile: int = DEFAULT_TILE,
                  progress: Callable[[int, int], None] | None = None, smallest: int = SMALLEST_SIDE) -> Path:
    """Convert ``src`` to a pyramidal OME-TIFF at ``out``; ``progress(tile rows done, tile rows)`` is called as
    level 0 is written (tifffile pulls the tiles, so this is a callback, not a generator). An exception, or
    Ctrl-C, leaves no output."""
    import tifffile

    src, out = Path(src), Path(out)
    if not 16 <= tile <= 4096 or tile % 16:
        raise BloodcellInputError(f"tile must be a multiple of 16 in 16..4096; got {tile}")
    if out.exists():
        raise BloodcellInputError("already exists; refusing to overwrite it", out)
    if not out.name.lower().endswith((".ome.tif", ".ome.tiff")):
        raise BloodcellInputError("the output name must end in .ome.tif (it is an OME-TIFF)", out)
    handle: Any = None
    spool: Any = None
    tmp: Path | None = None
    try:
        handle, read_rows = _source(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent, delete=False) as fh:
            tmp = Path(fh.name)  # ``.tmp``: what core/atomic.py's STALE_PATTERN clears if this process is killed
        spool = tempfile.TemporaryFile(dir=out.parent)
        shape = tuple(handle.levels[0].shape) if hasattr(handle, "levels") else tuple(handle.shape)
        dtype = np.dtype(handle.levels[0].dtype if hasattr(handle, "levels") else handle.dtype)
        sizes = level_sizes(shape[0], shape[1], smallest)
        levels = [_Level(s, tile, None if i == 0 else spool) for i, s in enumerate(sizes)]
        bands = -(-shape[0] // tile)

        def level0() -> Iterator[bytes]:
            for b in range(bands):
                y0 = b * tile
                band = read_rows(y0, min(shape[0], y0 + tile))
                tiles = levels[0].add(band)
                for lv in levels[1:]:  # cascade: each level takes half the rows of the one above
                    band = band if lv.carry is None else np.concatenate([lv.carry, band])
                    even = band.shape[0] // 2 * 2
                    lv.carry = band[even:] if even < band.shape[0] else None
                    band = _halve(band[:even]) if even else band[:0]
                    lv.add(band)
                yield from tiles
                if progress is not None:
                    progress(b + 1, bands)

        kw: dict[str, Any] = {"tile": (tile, tile), "compression": "zlib", "dtype": dtype,
                              "photometric": "rgb" if len(shape) == 3 else "minisblack"}
        with tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tw:
            tw.write(level0(), shape=shape, subifds=len(sizes) - 1, **kw)
            for (h, w), lv in zip(sizes[1:], levels[1:]):
                lv.add(np.zeros((0, w, *shape[2:]), dtype))  # flush a last partial tile row
                tw.write(lv.replay(), shape=(h, w, *shape[2:]), subfiletype=1, **kw)
        return publish(tmp, out)
    finally:
        if spool is not None:
            spool.close()
        if handle is not None:
            handle.close()
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
