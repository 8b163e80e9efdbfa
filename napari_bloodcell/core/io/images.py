"""Reading smear images (JPEG, PNG, TIFF, BMP) into arrays napari shows as they are meant to be seen."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BloodcellInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | Path) -> np.ndarray:
    """Read a smear image as (H, W) greyscale or (H, W, 3) RGB, keeping 8- or 16-bit depth.

    Alpha is dropped (slide scanners and some exports add an opaque alpha channel), palette images are expanded
    to RGB, and a corrupt or unsupported file raises :class:`BloodcellInputError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise BloodcellInputError("no such file", path)
    if not is_image_path(path):
        raise BloodcellInputError(
            f"unsupported image type {path.suffix!r} (allowed: {', '.join(IMAGE_SUFFIXES)})", path
        )
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            data = tifffile.imread(path)
        else:
            data = _read_with_pillow(path)
    except BloodcellInputError:
        raise
    except Exception as exc:  # every decoder has its own exception types
        raise BloodcellInputError(f"cannot read image: {exc}", path) from exc
    return _to_display_layout(np.asarray(data), path)


def _read_with_pillow(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
            img = img.convert("RGBA" if "transparency" in img.info or img.mode == "PA" else "RGB")
        elif img.mode == "LA" or img.mode == "1":
            img = img.convert("L")
        if img.mode.startswith("I;16"):
            return np.asarray(img, dtype=np.uint16)
        return np.asarray(img)


def _to_display_layout(data: np.ndarray, path: Path) -> np.ndarray:
    if data.ndim == 3 and data.shape[0] in (3, 4) and data.shape[-1] not in (3, 4):
        data = np.moveaxis(data, 0, -1)  # planar TIFF
    if data.ndim == 3 and data.shape[-1] == 4:
        data = data[..., :3]
    elif data.ndim == 3 and data.shape[-1] == 2 or data.ndim == 3 and data.shape[-1] == 1:  # grey + alpha
        data = data[..., 0]
    if data.ndim == 2 or (data.ndim == 3 and data.shape[-1] == 3):
        if data.dtype == np.int32 and data.size and data.min() >= 0 and data.max() < 65536:
            data = data.astype(np.uint16)  # Pillow's 'I' mode for 16-bit PNGs
        return np.ascontiguousarray(data)
    raise BloodcellInputError(
        f"image has shape {data.shape}; allowed: (H, W) greyscale, (H, W, 3) RGB or (H, W, 4) RGBA", path
    )


def image_size(path: str | Path) -> tuple[int, int]:
    """Width and height from the file header, without decoding the pixels."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.pages[0].shape
            if len(shape) == 3 and shape[0] in (3, 4) and shape[-1] not in (3, 4):
                return int(shape[2]), int(shape[1])
            return int(shape[1]), int(shape[0])
        from PIL import Image

        with Image.open(path) as img:
            return int(img.width), int(img.height)
    except FileNotFoundError:
        raise BloodcellInputError("no such file", path) from None
    except Exception as exc:
        raise BloodcellInputError(f"cannot read image: {exc}", path) from exc


def find_image(directory: Path, stem: str) -> Path | None:
    """The image called ``stem`` with any supported suffix (either case) in ``directory``, if there is one."""
    for suffix in IMAGE_SUFFIXES:
        for candidate in (directory / f"{stem}{suffix}", directory / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def png_bytes(array: np.ndarray) -> bytes:
    """Encode a 2D (8/16-bit) or RGB uint8 array as PNG, losslessly."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return buf.getvalue()
