"""Gallery thumbnails of 16-bit and float fields are scaled to 8 bits as the classifier sees them, not cast (a cast
wraps a 12-bit camera's values round 256 and shows its cells as noise)."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtGui import QColor

from napari_bloodcell.core.crops import field_range
from napari_bloodcell.core.io.rgb import as_rgb
from napari_bloodcell.gui.widgets.review_panels import THUMB, thumbnail

BOX = np.array([8.0, 10.0, 30.0, 26.0])


def pixels(pixmap) -> np.ndarray:
    """A pixmap's RGB values as an array (pixel by pixel: the same under PyQt5 and PyQt6)."""
    image = pixmap.toImage()
    out = np.zeros((image.height(), image.width(), 3), np.uint8)
    for y in range(image.height()):
        for x in range(image.width()):
            c = QColor(image.pixel(x, y))
            out[y, x] = c.red(), c.green(), c.blue()
    return out


def field(kind: str) -> np.ndarray:
    rng = np.random.default_rng(1)
    if kind == "12-bit rgb":
        return rng.integers(0, 4096, (40, 50, 3)).astype(np.uint16)
    if kind == "float grey":
        return (rng.random((40, 50)) * 3.0 - 1.0).astype(np.float32)
    return rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)


@pytest.mark.parametrize("kind", ["12-bit rgb", "float grey", "uint8 rgb"])
def test_a_thumbnail_shows_the_field_as_the_classifier_sees_it(qtbot, kind):
    img = field(kind)
    shown = pixels(thumbnail(img, BOX))
    assert shown.shape == (THUMB, THUMB, 3)
    np.testing.assert_array_equal(shown, pixels(thumbnail(as_rgb(img), BOX)))  # the whole field, as_rgb-scaled
    np.testing.assert_array_equal(shown, pixels(thumbnail(img, BOX, value_range=field_range(img))))


def test_a_16_bit_thumbnail_is_scaled_not_wrapped(qtbot):
    img = np.zeros((40, 50), np.uint16)
    img[:, 25:] = 4000  # the field's brightest value
    img[:, :25] = 2000  # half of it: mid-grey, where a cast to uint8 gives 2000 % 256 = 208
    shown = pixels(thumbnail(img, np.array([2.0, 2.0, 12.0, 12.0])))
    # within a screen's colour depth (Xvfb's 16-bit RGB565 turns 128 into 132/130/132); the cast would give 208
    assert (np.abs(shown.astype(int) - round(2000 * 255 / 4000)) <= 8).all()
