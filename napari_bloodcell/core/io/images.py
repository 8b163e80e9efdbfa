"""Reading smear images (JPEG, PNG, TIFF, BMP) into arrays napari shows as they are meant to be seen.

Every image file is untrusted input, and a large scan is a feature: each read goes through one gate. The header
is read first (never the pixels) and its size checked against the project's one pixel limit
(:func:`..untrusted.check_pixels`, ``BLOODCELL_MAX_PIXELS``) for every format alike; only then are pixels decoded.
Pillow's own decompression-bomb guard (179 megapixels) is raised to that same limit around our own reads only, so a
genuine 20000×20000 scan is not refused while a bomb is still refused, by us, with a message naming the setting.
Any decoder failure (a truncated file, a MemoryError, a TIFF structure error) becomes one line naming the file.
Images too large to decode whole are opened region by region with :func:`open_image` (:mod:`.lazy_images`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BloodcellInputError
from ..untrusted import check_pixels, is_regular_file, one_line, regular_file

if TYPE_CHECKING:
    from .lazy_images import LazyImage

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
_PILLOW_CONVERT = {"P": "RGB", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB",
                   "LA": "L", "1": "L"}
"""Pillow modes turned into ones napari shows as they look: palettes expanded, grey+alpha and bilevel to grey."""
PILLOW_FORMATS = ("JPEG", "PNG", "BMP", "DIB", "TIFF")
"""What Pillow may decode whatever the suffix says (JPEG covers multi-picture JPEGs): never EPS, which runs
Ghostscript, nor the other formats it knows."""


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read without decoding a pixel: the size the pixel limit is checked on,
    and the shape and dtype :func:`read_image` will return (display layout: (H, W) or (H, W, 3))."""

    width: int
    height: int
    planes: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def pixels(self) -> int:
        return self.width * self.height * max(self.planes, 1)


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_tiff_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in TIFF_SUFFIXES


def image_file_to_read(path: str | Path) -> Path:
    """``path`` if it names a supported image type and is a regular file (a FIFO called ``x.png`` would block a
    decoder for ever); otherwise a clear refusal."""
    path = Path(path)
    if not is_image_path(path):
        raise BloodcellInputError(
            f"unsupported image type {path.suffix!r} (allowed: {', '.join(IMAGE_SUFFIXES)})", path
        )
    return regular_file(path)


def cannot_read(exc: BaseException, path: Path) -> BloodcellInputError:
    """A decoder's exception as one line naming the file (MemoryError and friends have no message of their own)."""
    if isinstance(exc, BloodcellInputError):
        return exc
    if isinstance(exc, MemoryError):
        return BloodcellInputError("cannot read image: not enough memory to decode it", path)
    text = one_line(exc) or type(exc).__name__
    return BloodcellInputError(f"cannot read image: {text}", path)


# ----------------------------------------------------------------------------------------------------- Pillow

_PIL_LOCK = threading.Lock()
_PIL_STATE: dict[str, Any] = {"depth": 0, "saved": None}


@contextlib.contextmanager
def pillow_limit() -> Iterator[None]:
    """Pillow's bomb guard set to the project's pixel limit while we open and decode (our own check runs in
    between, on the header), and put back afterwards so the rest of the process keeps Pillow's default.

    Pillow would refuse a genuine 400-megapixel scan at 179 megapixels; its warning above the limit is silenced
    because our own refusal, which names ``BLOODCELL_MAX_PIXELS``, follows it. Nested and concurrent reads share
    one saved value (a counter), so the default is restored when the last read ends."""
    from PIL import Image

    from ..untrusted import max_pixels

    limit = max_pixels()
    with _PIL_LOCK:
        if _PIL_STATE["depth"] == 0:
            _PIL_STATE["saved"] = Image.MAX_IMAGE_PIXELS
        _PIL_STATE["depth"] += 1
        saved = _PIL_STATE["saved"]
        if saved is not None:  # None: someone chose to switch Pillow's guard off; ours still runs
            Image.MAX_IMAGE_PIXELS = max(int(saved), limit)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        with _PIL_LOCK:
            _PIL_STATE["depth"] -= 1
            if _PIL_STATE["depth"] == 0:
                Image.MAX_IMAGE_PIXELS = _PIL_STATE["saved"]


@contextlib.contextmanager
def _pillow_image(path: Path) -> Iterator[Any]:
    """An opened (not decoded) Pillow image whose header passed the pixel limit."""
    from PIL import Image

    with pillow_limit():
        try:
            img = Image.open(path, formats=PILLOW_FORMATS)
        except Image.DecompressionBombError:  # over twice our limit: opened again only to name its size
            img = _open_unguarded(path)
        with img:
            check_pixels(int(img.width), int(img.height), path)
            yield img


def _open_unguarded(path: Path) -> Any:
    """The header of an image Pillow refused as a bomb, read with its guard off for this one call (under the lock
    every change to the guard takes), so that our refusal can say how large it is and which setting to raise."""
    from PIL import Image

    with _PIL_LOCK:
        current = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return Image.open(path, formats=PILLOW_FORMATS)
        finally:
            Image.MAX_IMAGE_PIXELS = current


def _pillow_mode(img: Any) -> str:
    """The mode an opened Pillow image is converted to before it becomes an array."""
    mode = img.mode
    if mode == "P" and "transparency" in img.info:
        return "RGBA"
    return _PILLOW_CONVERT.get(mode, mode)


def _pillow_header(img: Any, path: Path) -> ImageHeader:
    from PIL import Image

    mode = _pillow_mode(img)
    dtype = np.dtype(np.uint16) if mode.startswith("I;16") else None
    probe = np.asarray(Image.new(mode, (1, 1)), dtype=dtype)  # the array layout of this mode, without decoding
    width, height = int(img.width), int(img.height)
    return ImageHeader(width, height, 1, display_shape((height, width, *probe.shape[2:]), path), probe.dtype)


def _pillow_pixels(img: Any) -> np.ndarray:
    mode = _pillow_mode(img)
    img.load()
    if mode != img.mode:
        img = img.convert(mode)
    if mode.startswith("I;16"):
        return np.asarray(img, dtype=np.uint16)
    return np.asarray(img)


# ------------------------------------------------------------------------------------------------------- TIFF


def tiff_header(tif: Any, path: Path) -> ImageHeader:
    """The header of a TIFF's first series (what ``tifffile.imread`` returns) from its tags alone."""
    if not tif.series:
        raise BloodcellInputError("cannot read image: the TIFF holds no image", path)
    series = tif.series[0]
    page = series.keyframe
    height, width = int(page.imagelength), int(page.imagewidth)
    samples = int(page.samplesperpixel)
    total = int(np.prod(series.shape, dtype=np.float64)) if series.shape else 0
    planes = max(1, total // max(1, height * width * samples))
    dtype = series.dtype if series.dtype is not None else page.dtype
    if dtype is None:
        raise BloodcellInputError(f"cannot read image: TIFF sample format {page.sampleformat} with "
                                  f"{page.bitspersample} bits per sample is not supported", path)
    return ImageHeader(width, height, planes, display_shape(tuple(series.shape), path), np.dtype(dtype))


# ------------------------------------------------------------------------------------------------------ reading


def image_header(path: str | Path) -> ImageHeader:
    """Size, shape and dtype from the file header, without decoding the pixels; an image above the pixel limit
    (``BLOODCELL_MAX_PIXELS``) is refused here, for every format."""
    path = image_file_to_read(path)
    try:
        if is_tiff_path(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                header = tiff_header(tif, path)
        else:
            with _pillow_image(path) as img:
                header = _pillow_header(img, path)
    except Exception as exc:  # every decoder has its own exception types (struct.error, TiffFileError, ...)
        raise cannot_read(exc, path) from None
    check_pixels(header.width, header.height, path, header.planes)
    return header


def image_size(path: str | Path) -> tuple[int, int]:
    """Width and height from the file header, without decoding the pixels (refused above the pixel limit)."""
    header = image_header(path)
    return header.width, header.height


def read_image(path: str | Path) -> np.ndarray:
    """Read a smear image whole as (H, W) greyscale or (H, W, 3) RGB, keeping 8- or 16-bit depth.

    Alpha is dropped (slide scanners and some exports add an opaque alpha channel), palette images are expanded
    to RGB, and a corrupt, unsupported or over-limit file raises :class:`BloodcellInputError` naming the file. The
    pixel limit is checked on the header before anything is decoded.
    """
    path = image_file_to_read(path)
    try:
        if is_tiff_path(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                header = tiff_header(tif, path)
                check_pixels(header.width, header.height, path, header.planes)
                data = tif.asarray()
        else:
            with _pillow_image(path) as img:  # the pixel limit is checked on the header, before decoding
                data = _pillow_pixels(img)
        return _to_display_layout(np.asarray(data), path)
    except Exception as exc:
        raise cannot_read(exc, path) from None


def open_image(path: str | Path, lazy: bool | None = None) -> LazyImage:
    """An image read region by region when it is large (see :mod:`.lazy_images`); the header is checked now."""
    from .lazy_images import open_image as _open

    return _open(path, lazy)


def display_shape(shape: tuple[int, ...], path: Path | None = None) -> tuple[int, ...]:
    """The shape :func:`_to_display_layout` gives an array of ``shape``, or the refusal it would raise."""
    if len(shape) == 3 and shape[0] in (3, 4) and shape[-1] not in (3, 4):
        shape = (shape[1], shape[2], shape[0])  # planar TIFF
    if len(shape) == 3 and shape[-1] == 4:
        shape = shape[:2] + (3,)
    elif len(shape) == 3 and shape[-1] in (1, 2):  # grey + alpha
        shape = shape[:2]
    if len(shape) == 2 or (len(shape) == 3 and shape[-1] == 3):
        return tuple(int(s) for s in shape)
    raise BloodcellInputError(
        f"image has shape {tuple(shape)}; allowed: (H, W) greyscale, (H, W, 3) RGB or (H, W, 4) RGBA", path
    )


def _to_display_layout(data: np.ndarray, path: Path) -> np.ndarray:
    display_shape(data.shape, path)
    if data.ndim == 3 and data.shape[0] in (3, 4) and data.shape[-1] not in (3, 4):
        data = np.moveaxis(data, 0, -1)  # planar TIFF
    if data.ndim == 3 and data.shape[-1] == 4:
        data = data[..., :3]
    elif data.ndim == 3 and data.shape[-1] in (1, 2):  # grey + alpha
        data = data[..., 0]
    if data.dtype == np.int32 and data.size and data.min() >= 0 and data.max() < 65536:
        data = data.astype(np.uint16)  # Pillow's 'I' mode for 16-bit PNGs
    return np.ascontiguousarray(data)


def find_image(directory: Path, stem: str) -> Path | None:
    """The image called ``stem`` with any supported suffix (either case) in ``directory``, if there is one."""
    for suffix in IMAGE_SUFFIXES:
        for candidate in (directory / f"{stem}{suffix}", directory / f"{stem}{suffix.upper()}"):
            if is_regular_file(candidate):
                return candidate
    return None


def lossless_image_bytes(array: np.ndarray) -> tuple[bytes, str]:
    """The pixels encoded without loss, and the suffix: PNG where PNG holds them (8-bit grey/RGB/RGBA, 16-bit grey),
    else TIFF (float, 16-bit colour, other integer types), which every reader here and most tools open."""
    import io

    array = np.ascontiguousarray(array)
    grey_or_colour = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))
    if grey_or_colour and (array.dtype == np.uint8 or (array.dtype == np.uint16 and array.ndim == 2)):
        return png_bytes(array), ".png"
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, array, photometric="rgb" if array.ndim == 3 and array.shape[2] in (3, 4) else None)
    return buf.getvalue(), ".tif"


def png_bytes(array: np.ndarray) -> bytes:
    """Encode a 2D (8/16-bit) or RGB uint8 array as PNG, losslessly."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return buf.getvalue()
