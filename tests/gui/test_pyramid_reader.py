"""Whole slides in napari (issue 18): a pyramidal OME-TIFF or OME-Zarr opens as one lazy multiscale Image layer, and
the Detect widget detects on its full-resolution level without reading it whole."""

from __future__ import annotations

import numpy as np
import pytest

from napari_bloodcell.gui._reader import get_reader, read_one
from napari_bloodcell.gui.widgets.detect import DetectWidget
from tests.core.test_pyramids import levels_of, write_ome_tiff, write_ome_zarr


@pytest.fixture
def base():
    return np.random.default_rng(5).integers(0, 256, (256, 256, 3), dtype=np.uint8)


def test_the_reader_gives_a_lazy_multiscale_layer(tmp_path, base):
    tif = write_ome_tiff(tmp_path / "slide.ome.tif", levels_of(base), tile=(64, 64))
    zarr_root = write_ome_zarr(tmp_path / "slide.ome.zarr", levels_of(base), fmt=3, chunks=64)
    for path in (tif, zarr_root):
        assert get_reader(str(path)) is not None
        (data, kwargs, kind), = read_one(path)
        assert kind == "image" and kwargs["multiscale"] and kwargs["rgb"] and kwargs["name"] == "slide"
        assert all(hasattr(d, "dask") for d in data) and [d.shape[:2] for d in data] == [(256, 256), (128, 128),
                                                                                          (64, 64)]
        np.testing.assert_array_equal(data[2].compute(), base[::4, ::4])
    (tmp_path / "plain").mkdir()
    assert get_reader(str(tmp_path / "plain")) is None


def test_detect_widget_reads_level_0_of_a_multiscale_layer_lazily(make_napari_viewer, qtbot, tmp_path, base,
                                                                  monkeypatch):
    import napari_bloodcell.core.inference.detect as detect

    root = write_ome_zarr(tmp_path / "slide.zarr", levels_of(base), chunks=64)
    viewer = make_napari_viewer()
    layer, = viewer.open(str(root), plugin="napari-bloodcell")
    assert layer.multiscale and len(layer.data) == 3
    seen = {}

    def fake_job(model, image, *args, **kwargs):  # what the worker hands the detector: level 0, still lazy
        seen["image"] = image
        yield from ()
        return ["WBC", "RBC", "Platelets"], "fake", (np.array([[10.0, 20.0, 40.0, 60.0]]), np.array([1]),
                                                     np.array([0.9]))

    monkeypatch.setattr(detect, "detect_job", fake_job)
    widget = DetectWidget(viewer)
    widget.image.value = layer
    widget.model.value = "classical"
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert seen["image"] is layer.data[0] and hasattr(seen["image"], "dask")
    assert widget.last_layer is not None and len(widget.last_layer.data) == 1


def test_another_readers_zarr_level_is_read_tile_by_tile_too(monkeypatch, base):
    import zarr

    import napari_bloodcell.core.inference.detect as detect
    from napari_bloodcell.core.progress import drain
    from napari_bloodcell.gui.widgets.detect import _detect_field

    level0 = zarr.create_array(store={}, shape=base.shape, chunks=(64, 64, 3), dtype="uint8")
    level0[:] = base
    seen = {}

    def fake_job(model, image, *args, **kwargs):
        seen["image"] = image
        yield from ()
        return ["WBC"], "fake", (np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros(0))

    monkeypatch.setattr(detect, "detect_job", fake_job)
    drain(_detect_field(level0, "classical", None, 0.3, 0.5, "cpu", None, multiscale=True))
    assert hasattr(seen["image"], "dask") and seen["image"].chunksize == (64, 64, 3)


def test_the_reader_closes_the_slide_when_the_layer_cannot_be_made(tmp_path, base, monkeypatch):
    import napari_bloodcell.gui._reader as reader
    from napari_bloodcell.core.io.pyramid import Pyramid

    tif = write_ome_tiff(tmp_path / "slide.ome.tif", levels_of(base), tile=(64, 64))
    closed = []
    real_close = Pyramid.close
    monkeypatch.setattr(Pyramid, "close", lambda self: (closed.append(self.path), real_close(self)))

    def broken(*args, **kwargs):
        raise RuntimeError("layer")

    monkeypatch.setattr(reader, "image_layer", broken)
    with pytest.raises(RuntimeError):
        read_one(tif)
    assert closed == [tif]
