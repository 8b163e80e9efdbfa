"""Large images are a feature, not an attack: one pixel limit for every format, header-only sizes, region reads,
tile-by-tile detection in bounded memory, and one clear line for every broken or hostile image file."""

import os
import signal
import struct
import threading
import tracemalloc
import zlib
from contextlib import contextmanager

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.inference.detect import (
    ClassicalPredictor,
    detect_array,
    detect_files,
    expand_inputs,
)
from napari_bloodcell.core.info import describe
from napari_bloodcell.core.io.images import image_header, image_size, open_image, png_bytes, read_image
from napari_bloodcell.core.io.rgb import as_rgb, display_range
from napari_bloodcell.core.progress import drain

SMEAR = "smear/JPEGImages/smear_0000.png"
FORMATS = [".png", ".jpg", ".tif", ".bmp"]


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (a FIFO read would block for ever)."""
    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def write_huge_tiled_tiff(path, side=20000, tile=256):
    """A side×side RGB tiled TIFF of a few MB, written from one pre-compressed tile (nothing side×side is ever
    held in memory)."""
    pixels = np.full((tile, tile, 3), 210, np.uint8)
    pixels[tile // 3: tile // 2, tile // 3: tile // 2] = (120, 40, 90)
    encoded = zlib.compress(pixels.tobytes())
    count = ((side + tile - 1) // tile) ** 2
    tifffile.imwrite(path, (encoded for _ in range(count)), shape=(side, side, 3), dtype=np.uint8,
                     tile=(tile, tile), compression="zlib", photometric="rgb")
    return pixels


def save(path, array):
    if path.suffix == ".tif":
        tifffile.imwrite(path, array)
    else:
        Image.fromarray(array).save(path)


def png_header_only(path, width, height):
    """A PNG whose IHDR declares ``width``×``height`` (what a bomb looks like before it is decoded)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


# ---------------------------------------------------------------------------------------------- huge headers


def test_a_20000_square_tiled_tiff_is_described_from_its_header(tmp_path):
    import dask.array  # noqa: F401 - imported before tracing: its import is not the read

    path = tmp_path / "scan.tif"
    tile = write_huge_tiled_tiff(path)
    assert path.stat().st_size < 5_000_000
    tracemalloc.start()
    try:
        assert image_size(path) == (20000, 20000)
        assert describe(path) == {"path": str(path), "kind": "image", "shape": [20000, 20000, 3],
                                  "dtype": "uint8", "rgb": True}
        with open_image(path) as image:
            assert image.lazy and image.shape == (20000, 20000, 3)
            region = image.read(10_000, 10_300, 5_000, 5_400)  # touches 4 x 3 tiles of 1.2 GB worth
            view = image.to_dask()[19_900:, 19_900:]
            corner = np.asarray(view)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 30_000_000, f"{peak / 1e6:.0f} MB traced"  # the whole image would be 1,200 MB
    expected = np.tile(tile, (3, 3, 1))
    np.testing.assert_array_equal(region, expected[10_000 % 256:][:300, 5_000 % 256:][:, :400])
    assert corner.shape == (100, 100, 3)
    np.testing.assert_array_equal(corner, np.tile(tile, (2, 2, 1))[188:288, 188:288])  # 19900 = 77 * 256 + 188


def test_pillow_does_not_refuse_a_genuine_image_under_our_limit(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    png_header_only(big, 20000, 20000)  # 400 megapixels: above Pillow's own 179 (error at 358)
    default = Image.MAX_IMAGE_PIXELS
    assert image_size(big) == (20000, 20000)
    assert Image.MAX_IMAGE_PIXELS == default  # raised only around our own reads
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # decoding goes through the same gate
    small = tmp_path / "small.png"
    Image.fromarray(np.full((40, 40, 3), 7, np.uint8)).save(small)
    assert read_image(small).shape == (40, 40, 3)
    assert Image.MAX_IMAGE_PIXELS == 100


@pytest.mark.parametrize("suffix", FORMATS)
def test_one_pixel_limit_for_every_format(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"x{suffix}"
    save(path, np.full((40, 50, 3), 100, np.uint8))
    monkeypatch.setenv("BLOODCELL_MAX_PIXELS", "1999")
    for read in (read_image, image_size, image_header, open_image, describe):
        with pytest.raises(BloodcellInputError, match="BLOODCELL_MAX_PIXELS=2000") as info:
            read(path)
        assert "\n" not in str(info.value) and path.name in str(info.value)
    monkeypatch.setenv("BLOODCELL_MAX_PIXELS", "2000")
    assert read_image(path).shape == (40, 50, 3)


def test_a_png_bomb_is_refused_by_our_limit_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    png_header_only(path, 60000, 60000)  # 3.6 gigapixels, above the default 2.5
    with pytest.raises(BloodcellInputError, match="BLOODCELL_MAX_PIXELS"):
        read_image(path)
    monkeypatch.setenv("BLOODCELL_MAX_PIXELS", str(10**8))
    with pytest.raises(BloodcellInputError, match="BLOODCELL_MAX_PIXELS=3600000000"):
        image_size(path)


# ------------------------------------------------------------------------------------- broken, hostile files


def test_a_fifo_named_like_an_image_is_refused_without_hanging(tmp_path):
    from napari_bloodcell.gui._reader import get_reader

    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    with deadline(10):
        for read in (read_image, image_size, open_image, describe):
            with pytest.raises(BloodcellInputError, match="not a regular file"):
                read(fifo)
        reader = get_reader(str(fifo))
        assert reader is not None
        with pytest.raises(BloodcellInputError, match="not a regular file"):
            reader(str(fifo))
        with pytest.raises(BloodcellInputError, match="x.png: is not a regular file"):  # bloodcell detect
            drain(detect_files(ClassicalPredictor(), expand_inputs([fifo])))
    (tmp_path / "y.png").write_bytes(png_bytes(np.zeros((4, 4), np.uint8)))
    assert expand_inputs([tmp_path]) == [tmp_path / "y.png"]  # a folder's pipes are not its images


def test_truncated_and_corrupt_images_give_one_line_naming_the_file(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    good = (tmp_path / "a.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbled.png").write_bytes(good[:60] + bytes(200) + good[260:])
    (tmp_path / "empty.bmp").write_bytes(b"")
    (tmp_path / "header.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(30))
    (tmp_path / "notatiff.tif").write_bytes(b"II*\x00" + bytes(4) + b"nothing here")
    write_huge_tiled_tiff(tmp_path / "cut.tif", side=2048)
    data = (tmp_path / "cut.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])  # tiles missing from the second half
    for name in ("truncated.png", "garbled.png", "empty.bmp", "header.jpg", "notatiff.tif", "cut.tif"):
        with pytest.raises(BloodcellInputError) as info:
            read_image(tmp_path / name)
        message = str(info.value)
        assert name in message and "\n" not in message, message
    with open_image(tmp_path / "cut.tif", lazy=True) as image:  # a lazy read finds the missing tile when it
        image.read(0, 10, 0, 10)                                # gets there, and says so in one line
        with pytest.raises(BloodcellInputError, match="cut.tif: cannot read image"):
            image.read(1900, 2048, 1900, 2048)


def test_a_memory_error_while_decoding_is_one_clear_line(tmp_path, monkeypatch):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8))

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(tifffile.TiffFile, "asarray", no_memory)
    with pytest.raises(BloodcellInputError, match="a.tif: cannot read image: not enough memory"):
        read_image(path)


# -------------------------------------------------------------------------------------------- region reads


LAYOUTS = {
    "tiled": {"tile": (64, 48), "compression": "zlib"},
    "strips": {"rowsperstrip": 7, "compression": "zlib"},
    "uncompressed": {},
    "planar": {"planarconfig": "separate", "tile": (32, 32), "compression": "zlib"},
    "rgba-big-endian": {"byteorder": ">", "rowsperstrip": 16},
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_region_reads_match_the_whole_image(tmp_path, layout):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (150, 205, 3), dtype=np.uint8)
    data = np.moveaxis(rgb, -1, 0).copy() if layout == "planar" else rgb
    if layout == "rgba-big-endian":
        data = np.dstack([rgb.astype(np.uint16) * 257, np.full(rgb.shape[:2], 65535, np.uint16)])
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, data, photometric="rgb", **LAYOUTS[layout])
    whole = read_image(path)
    with open_image(path, lazy=True) as image:
        assert image.lazy and image.shape == whole.shape and image.dtype == whole.dtype
        for _ in range(10):
            y0, x0 = rng.integers(0, 150), rng.integers(0, 205)
            y1, x1 = y0 + rng.integers(1, 90), x0 + rng.integers(1, 120)
            np.testing.assert_array_equal(image.read(y0, y1, x0, x1), whole[y0:y1, x0:x1])
        np.testing.assert_array_equal(image[3:140:4, -60:], whole[3:140:4, -60:])
        np.testing.assert_array_equal(np.asarray(image.to_dask()), whole)


def test_the_lazy_threshold_is_a_setting(tmp_path, monkeypatch):
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, np.zeros((40, 50, 3), np.uint8), tile=(16, 16))
    with open_image(path) as image:
        assert not image.lazy
    monkeypatch.setenv("BLOODCELL_LAZY_PIXELS", "1999")
    with open_image(path) as image:
        assert image.lazy
    png = tmp_path / "x.png"  # Pillow decodes whole: honest about it
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(png)
    with open_image(png) as image:
        assert not image.lazy and image.read(0, 5, 0, 5).shape == (5, 5, 3)
    monkeypatch.setenv("BLOODCELL_LAZY_PIXELS", "lots")
    with pytest.raises(BloodcellInputError, match="BLOODCELL_LAZY_PIXELS"):
        open_image(path)


def test_the_napari_reader_opens_a_large_image_lazily(tmp_path, monkeypatch):
    from napari_bloodcell.gui._reader import read_one

    path = tmp_path / "scan.tif"
    rgb = np.random.default_rng(2).integers(0, 255, (60, 70, 3), dtype=np.uint8)
    tifffile.imwrite(path, rgb, tile=(16, 16), compression="zlib")
    (data, kwargs, kind), = read_one(path)
    assert isinstance(data, np.ndarray) and kind == "image"
    monkeypatch.setenv("BLOODCELL_LAZY_PIXELS", "1000")
    (data, kwargs, kind), = read_one(path)
    assert hasattr(data, "dask") and kwargs["rgb"] and data.shape == (60, 70, 3)
    np.testing.assert_array_equal(np.asarray(data), rgb)
    grey = tmp_path / "grey16.tif"
    tifffile.imwrite(grey, (np.arange(60 * 70, dtype=np.uint16) * 9).reshape(60, 70), tile=(16, 16))
    (data, kwargs, _), = read_one(grey)
    assert hasattr(data, "dask") and kwargs["contrast_limits"] == (0.0, float(60 * 70 - 1) * 9)


# ------------------------------------------------------------------------------------------------ detection


def test_lazy_tiled_detection_equals_whole_array_detection(tmp_path, monkeypatch, sample_data):
    field = read_image(sample_data / SMEAR)[:240, :320]
    path = tmp_path / "field.tif"
    tifffile.imwrite(path, field, tile=(32, 48), compression="zlib")
    predictor = ClassicalPredictor()
    whole = drain(detect_array(predictor, field, tile=128, overlap=40))
    assert len(whole[0]) > 5
    monkeypatch.setenv("BLOODCELL_LAZY_PIXELS", "1000")
    with open_image(path) as image:
        assert image.lazy
        dask_view = drain(detect_array(predictor, image.to_dask(), tile=128, overlap=40))
    lazy = drain(detect_files(predictor, [path], tile=128, overlap=40)).images[0]
    for expected, got in zip(whole, (lazy.boxes, lazy.labels, lazy.scores)):
        np.testing.assert_array_equal(got, expected)
    for expected, got in zip(whole, dask_view):
        np.testing.assert_array_equal(got, expected)
    assert (lazy.width, lazy.height) == (320, 240)


def test_a_float_tiff_scaled_0_to_1_is_detected_like_the_8_bit_image(tmp_path, sample_data):
    field = read_image(sample_data / SMEAR)[:480, :320]
    path = tmp_path / "float.tif"
    tifffile.imwrite(path, field.astype(np.float32) / 255.0)
    predictor = ClassicalPredictor()
    expected = drain(detect_array(predictor, field))
    got = drain(detect_files(predictor, [path])).images[0]
    assert len(expected[0]) > 5
    np.testing.assert_array_equal(got.boxes, expected[0])
    np.testing.assert_array_equal(got.labels, expected[1])


def test_detection_sees_every_depth_and_range_as_8_bit():
    rgb = np.random.default_rng(3).integers(0, 256, (20, 30, 3)).astype(np.uint8)
    rgb[-1, -1], rgb[-1, -2] = 0, 255  # the full 8-bit range is present
    np.testing.assert_array_equal(as_rgb(rgb.astype(np.float32) / 255), rgb)
    np.testing.assert_array_equal(as_rgb(rgb.astype(np.float64)), rgb)  # floats holding 8-bit values
    np.testing.assert_array_equal(as_rgb(rgb.astype(np.uint16) * 16), rgb)  # 12-bit camera: its own maximum
    np.testing.assert_array_equal(as_rgb(rgb.astype(np.float32) * 4 - 100),
                                  as_rgb(rgb.astype(np.float32) * 4 - 100, (-100.0, 920.0)))
    assert display_range(np.float32, -100.0, 920.0) == (-100.0, 920.0)  # other float ranges: min..max
    assert display_range(np.uint16, 0.0, 65535.0) == (0.0, 65535.0)
    holes = rgb.astype(np.float32) / 255
    holes[0, 0], holes[1, 1], holes[2, 2] = np.nan, np.inf, -np.inf
    out = as_rgb(holes)
    assert out.dtype == np.uint8 and (out[0, 0] == 255).all() and (out[1, 1] == 255).all() and (out[2, 2] == 0).all()
    np.testing.assert_array_equal(out[5:], rgb[5:])  # the non-finite pixels do not change the scale
    assert (as_rgb(np.full((4, 4), np.nan, np.float32)) == 255).all()  # nothing finite: no NaN reaches a model


def test_detection_in_a_worker_thread_reads_a_lazy_field(tmp_path, monkeypatch):
    """What the Detect widget does with a lazy layer: the dask field goes to the job, read in the worker."""
    from napari_bloodcell.core.inference.detect import detect_job

    path = tmp_path / "blank.tif"
    tifffile.imwrite(path, np.full((200, 260, 3), 230, np.uint8), tile=(32, 32))
    monkeypatch.setenv("BLOODCELL_LAZY_PIXELS", "1000")
    with open_image(path) as image:
        job = detect_job("classical", image.to_dask(), tile=128, overlap=32)
        result = {}
        thread = threading.Thread(target=lambda: result.update(value=drain(job)))
        thread.start()
        thread.join(60)
    classes, model_id, (boxes, _, _) = result["value"]
    assert model_id == "classical" and boxes.shape[1] == 4
