"""Whole-slide pyramids (issue 18): pyramidal OME-TIFF and OME-Zarr open lazily, levels match the data, detection
over level 0 equals detection on the array in memory, and hostile metadata is one line naming the file."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tifffile

from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.inference.detect import detect_array, detect_files, expand_inputs
from napari_bloodcell.core.io.pyramid import is_pyramid_path, open_detection_field, open_pyramid
from napari_bloodcell.core.progress import Progress, drain

SIDE = 512


@pytest.fixture(scope="module")
def base():
    """Bright noise with dark 10×10 squares: a field whose 'cells' a tiny predictor finds exactly."""
    rng = np.random.default_rng(18)
    img = rng.integers(150, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    for y, x in rng.integers(0, SIDE - 10, (30, 2)):
        img[y:y + 10, x:x + 10] = 20
    return img


def levels_of(img, n=3):
    return [img[:: 2 ** k, :: 2 ** k].copy() for k in range(n)]


def write_ome_tiff(path, levels, tile=(64, 64)):
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        tw.write(levels[0], tile=tile, subifds=len(levels) - 1, photometric="rgb", compression="zlib")
        for lv in levels[1:]:
            tw.write(lv, tile=tile, subfiletype=1, photometric="rgb", compression="zlib")
    return path


def write_ome_zarr(root, levels, fmt=2, chunks=64, paths=None, axes="cyx", create=True):
    """OME-Zarr 0.4 (Zarr v2) or 0.5 (Zarr v3), channels first as NGFF writers store them."""
    import zarr

    group = zarr.open_group(str(root), mode="w", zarr_format=fmt)
    paths = paths or [str(i) for i in range(len(levels))]
    if create:
        for name, lv in zip(paths, levels):
            data = np.moveaxis(lv, -1, 0) if axes == "cyx" else lv
            arr = group.create_array(name, shape=data.shape, chunks=(3, chunks, chunks) if axes == "cyx"
                                     else (chunks, chunks), dtype=data.dtype)
            arr[:] = data
    multiscales = [{"version": "0.4" if fmt == 2 else "0.5",
                    "axes": [{"name": a, "type": "channel" if a == "c" else "space"} for a in axes],
                    "datasets": [{"path": p} for p in paths]}]
    if fmt == 2:
        group.attrs["multiscales"] = multiscales
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": multiscales}
    return root


@pytest.fixture(scope="module")
def slides(tmp_path_factory, base):
    folder = tmp_path_factory.mktemp("slides")
    levels = levels_of(base)
    return {"tiff": write_ome_tiff(folder / "slide.ome.tif", levels),
            "zarr2": write_ome_zarr(folder / "slide2.zarr", levels, fmt=2),
            "zarr3": write_ome_zarr(folder / "slide3.ome.zarr", levels, fmt=3)}


@pytest.mark.parametrize("kind", ["tiff", "zarr2", "zarr3"])
def test_a_pyramid_opens_lazily_and_every_level_matches(slides, base, kind):
    assert is_pyramid_path(slides[kind])
    with open_pyramid(slides[kind]) as pyramid:
        assert [lv.shape for lv in pyramid.levels] == [(512, 512, 3), (256, 256, 3), (128, 128, 3)]
        assert pyramid.levels[0].file_chunks == (64, 64)
        for level, expected in zip(pyramid.levels, levels_of(base)):
            np.testing.assert_array_equal(level.read(0, 10**6, 0, 10**6), expected)
        np.testing.assert_array_equal(pyramid.levels[0].read(100, 333, 250, 501), base[100:333, 250:501])
        np.testing.assert_array_equal(pyramid.levels[0][5:50:3, 9:90], base[5:50:3, 9:90])
        dask_levels = pyramid.dask_levels()
        assert [d.shape for d in dask_levels] == [(512, 512, 3), (256, 256, 3), (128, 128, 3)]
        np.testing.assert_array_equal(dask_levels[1][100:220, 17:250].compute(), base[::2, ::2][100:220, 17:250])


def test_a_plain_tiff_is_no_pyramid_but_opens_as_one_level(tmp_path, base):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, base[:200, :300], tile=(64, 64))
    assert not is_pyramid_path(path) and not is_pyramid_path(tmp_path) and not is_pyramid_path(tmp_path / "no.tif")
    with open_pyramid(path) as pyramid:
        assert len(pyramid.levels) == 1
        np.testing.assert_array_equal(pyramid.levels[0].read(0, 200, 0, 300), base[:200, :300])


def test_grey_and_yx_axes_read_as_2d(tmp_path, base):
    grey = [lv[..., 0].copy() for lv in levels_of(base, 2)]
    root = write_ome_zarr(tmp_path / "grey.zarr", grey, axes="yx")
    with open_pyramid(root) as pyramid:
        assert pyramid.shape == (512, 512)
        np.testing.assert_array_equal(pyramid.levels[1].read(0, 256, 0, 256), grey[1])


class SquareFinder:
    """A predictor that boxes the dark squares of the test field: exact, fast, deterministic."""

    classes = ["WBC", "RBC", "Platelets"]
    model_id = "squares"
    native_size = 128
    batch_size = 4

    def predict(self, tiles, score, nms_iou):
        from scipy import ndimage

        out = []
        for tile in tiles:
            labels, _ = ndimage.label(tile[..., 0] < 60)
            boxes = [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndimage.find_objects(labels)]
            b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            out.append((b, np.ones(len(b), dtype=np.int64), np.full(len(b), 0.9)))
        return out


@pytest.mark.parametrize("kind", ["tiff", "zarr3"])
def test_detection_over_level_0_equals_detection_in_memory_with_tile_progress(slides, base, kind):
    predictor = SquareFinder()
    expected = drain(detect_array(predictor, base, tile=128, overlap=32))
    assert len(expected[0]) > 15
    events = []
    aset = drain(detect_files(predictor, expand_inputs([slides[kind]]), tile=128, overlap=32), events.append)
    rec = aset.images[0]
    for want, got in zip(expected, (rec.boxes, rec.labels, rec.scores)):
        np.testing.assert_array_equal(got, want)
    assert (rec.width, rec.height) == (SIDE, SIDE)
    tiles = [e for e in events if isinstance(e, Progress) and e.stage == "tiles"]
    assert tiles and tiles[-1].step == tiles[-1].total == 25  # per-tile progress on a slide, then per image
    assert events[-1].stage == "" and (events[-1].step, events[-1].total) == (1, 1)
    with open_pyramid(slides[kind]) as pyramid:  # the napari layer's level 0 (a dask array) gives the same
        got = drain(detect_array(predictor, pyramid.dask_levels()[0], tile=128, overlap=32))
    np.testing.assert_array_equal(got[0], expected[0])


def test_closing_detection_on_a_slide_stops_it_and_releases_the_file(slides):
    job = detect_files(SquareFinder(), [slides["tiff"]], tile=128, overlap=32)
    first = next(job)
    assert first.stage == "tiles" and first.step < first.total
    job.close()  # what Cancel and Ctrl-C do
    with open_detection_field(slides["tiff"]) as field:
        assert field.shape == (SIDE, SIDE, 3) and field.lazy


# ----------------------------------------------------------------------------------------- hostile metadata


def refused(path, match):
    with pytest.raises(BloodcellInputError, match=match) as info:
        open_pyramid(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "Traceback" not in message
    return message


def test_levels_that_grow_or_shrink_unevenly_are_refused(tmp_path, base):
    grow = [base[::2, ::2].copy(), base]
    refused(write_ome_tiff(tmp_path / "grow.ome.tif", grow), "levels must shrink")
    refused(write_ome_zarr(tmp_path / "grow.zarr", grow), "levels must shrink")
    uneven = [base, base[::4, ::2].copy()]
    refused(write_ome_zarr(tmp_path / "uneven.zarr", uneven), "reduced by one factor")


def test_huge_declared_shapes_and_chunks_are_refused_before_reading(tmp_path, monkeypatch):
    import zarr

    root = tmp_path / "huge.zarr"
    group = zarr.open_group(str(root), mode="w", zarr_format=2)
    group.create_array("0", shape=(3, 60000, 60000), chunks=(3, 512, 512), dtype="uint8")  # metadata only
    group.attrs["multiscales"] = [{"axes": ["c", "y", "x"], "datasets": [{"path": "0"}]}]
    refused(root, "above the limit")
    monkeypatch.setenv("BLOODCELL_MAX_PIXELS", str(10**10))
    group = zarr.open_group(str(root), mode="w", zarr_format=2)
    group.create_array("0", shape=(3, 60000, 60000), chunks=(3, 12000, 12000), dtype="uint8")
    group.attrs["multiscales"] = [{"axes": ["c", "y", "x"], "datasets": [{"path": "0"}]}]
    refused(root, "one chunk")
    monkeypatch.setenv("BLOODCELL_MAX_PIXELS", "1000")
    refused(write_ome_tiff(tmp_path / "big.ome.tif", [np.zeros((64, 64, 3), np.uint8)], tile=(16, 16)),
            "above the limit")


def test_missing_arrays_and_path_escapes_are_refused(tmp_path, base):
    levels = levels_of(base[:256, :256], 2)
    refused(write_ome_zarr(tmp_path / "missing.zarr", levels, paths=["0", "7"], create=False), "holds no array")
    outside = write_ome_zarr(tmp_path / "outside.zarr", levels)
    for bad in ("../outside.zarr/0", "/etc", "0/../../x", "", 7, None):
        root = write_ome_zarr(tmp_path / "escape.zarr", levels, paths=["0", "1"])
        attrs = json.loads((root / ".zattrs").read_text())
        attrs["multiscales"][0]["datasets"][0]["path"] = bad
        (root / ".zattrs").write_text(json.dumps(attrs))
        refused(root, "dataset path")
    root = write_ome_zarr(tmp_path / "link.zarr", levels, paths=["0", "1"])
    os.symlink(outside / "0", root / "away")
    attrs = json.loads((root / ".zattrs").read_text())
    attrs["multiscales"][0]["datasets"][0]["path"] = "away"
    (root / ".zattrs").write_text(json.dumps(attrs))
    refused(root, "outside the folder")


@pytest.mark.parametrize("attrs, match", [
    ("{not json", "JSON|json"),
    ('{"multiscales": []}', "multiscales"),
    ('{"multiscales": [{"datasets": []}]}', "no datasets"),
    ('{"multiscales": [{"datasets": [{"path": "0"}], "axes": ["q", "y", "x"]}]}', "not one of"),
    ('{"multiscales": [{"datasets": [{"path": "0"}], "axes": ["y", "y", "x"]}]}', "repeat"),
    ('{"multiscales": [{"datasets": [{"path": "0"}], "axes": ["y", "x"]}]}', "dimensions"),
    ('{"multiscales": [{"datasets": [' + ",".join(['{"path": "0"}'] * 40) + "]}]}", "levels"),
])
def test_broken_multiscales_metadata_is_one_line(tmp_path, base, attrs, match):
    root = write_ome_zarr(tmp_path / "broken.zarr", levels_of(base[:128, :128], 1))
    (root / ".zattrs").write_text(attrs)
    refused(root, match)


def test_a_broken_chunk_is_one_line_when_read(tmp_path, base):
    root = write_ome_zarr(tmp_path / "chunk.zarr", levels_of(base[:256, :256], 1))
    (root / "0" / "0.0.0").write_bytes(b"not a compressed chunk")
    with open_pyramid(root) as pyramid:
        with pytest.raises(BloodcellInputError, match="cannot read image") as info:
            pyramid.levels[0].read(0, 10, 0, 10)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------------ conversion


def test_any_image_converts_to_a_pyramid_band_by_band(tmp_path, base):
    from PIL import Image

    from napari_bloodcell.core.io.pyramid_write import write_pyramid

    field = base[:300, :350]
    Image.fromarray(field).save(tmp_path / "scan.png")
    out = write_pyramid(tmp_path / "scan.png", tmp_path / "scan.ome.tif", tile=64, smallest=64)
    with open_pyramid(out) as pyramid:
        assert [lv.shape for lv in pyramid.levels] == [(300, 350, 3), (150, 175, 3), (75, 87, 3)]
        np.testing.assert_array_equal(pyramid.levels[0].read(0, 300, 0, 350), field)
        b = field.astype(np.float32)
        half = np.round((b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2]) / 4).astype(np.uint8)
        np.testing.assert_array_equal(pyramid.levels[1].read(0, 150, 0, 175), half)
    with pytest.raises(BloodcellInputError, match="already exists"):
        write_pyramid(tmp_path / "scan.png", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.ome.tif", "scan.png"]  # no partial left behind


# ------------------------------------------------------------------------------------------- hostile chunks


def chunk_refused(root, match):
    with open_pyramid(root) as pyramid:
        with pytest.raises(BloodcellInputError, match=match) as info:
            pyramid.levels[0].read(0, 10, 0, 10)
    assert "\n" not in str(info.value) and str(root) in str(info.value)


def test_chunks_that_link_out_of_the_folder_are_refused(tmp_path, base):
    levels = levels_of(base[:256, :256], 1)
    outside = write_ome_zarr(tmp_path / "outside.zarr", levels)
    for i, target in enumerate((outside / "0" / "0.0.0", "/dev/zero")):
        root = write_ome_zarr(tmp_path / f"link{i}.zarr", levels)
        (root / "0" / "0.0.0").unlink()
        os.symlink(target, root / "0" / "0.0.0")
        chunk_refused(root, "outside the folder")


def test_a_fifo_chunk_is_refused_never_waited_on(tmp_path, base):
    import subprocess
    import sys

    root = write_ome_zarr(tmp_path / "fifo.zarr", levels_of(base[:256, :256], 1))
    (root / "0" / "0.0.0").unlink()
    os.mkfifo(root / "0" / "0.0.0")
    code = ("import sys\n"
            "from napari_bloodcell.core.errors import BloodcellInputError\n"
            "from napari_bloodcell.core.io.pyramid import open_pyramid\n"
            "with open_pyramid(sys.argv[1]) as p:\n"
            "    try:\n"
            "        p.levels[0].read(0, 10, 0, 10)\n"
            "    except BloodcellInputError as exc:\n"
            "        print(exc)\n")
    # a child with a timeout: a regression that blocks on the FIFO fails this test instead of hanging the suite
    proc = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "not a regular file" in proc.stdout and len(proc.stdout.strip().splitlines()) == 1


def test_chunks_that_decode_past_their_size_are_refused(tmp_path, base):
    import zlib

    import numcodecs
    import zarr

    levels = levels_of(base[:256, :256], 1)
    one_chunk = 3 * 64 * 64
    root = write_ome_zarr(tmp_path / "blosc.zarr", levels)
    assert json.loads((root / "0" / ".zarray").read_text())["compressor"]["id"] == "blosc"  # zarr's v2 default
    (root / "0" / "0.0.0").write_bytes(numcodecs.Blosc().encode(bytes(100 * one_chunk)))
    chunk_refused(root, "decodes to more")
    root3 = write_ome_zarr(tmp_path / "zstd.zarr", levels, fmt=3)  # zarr's v3 default: zstd
    (root3 / "0" / "c" / "0" / "0" / "0").write_bytes(numcodecs.Zstd().encode(bytes(100 * one_chunk)))
    chunk_refused(root3, "decodes to more")
    (root / "0" / "0.0.0").write_bytes(bytes(200_000))  # encoded far above one chunk and any compression overhead
    chunk_refused(root, "above the")

    root = tmp_path / "zlib.zarr"
    group = zarr.open_group(str(root), mode="w", zarr_format=2)
    arr = group.create_array("0", shape=(3, 256, 256), chunks=(3, 64, 64), dtype="uint8",
                             compressors=numcodecs.Zlib())
    arr[:] = np.moveaxis(levels[0], -1, 0)
    group.attrs["multiscales"] = [{"axes": ["c", "y", "x"], "datasets": [{"path": "0"}]}]
    with open_pyramid(root) as pyramid:
        np.testing.assert_array_equal(pyramid.levels[0].read(0, 256, 0, 256), levels[0])
    (root / "0" / "0.0.0").write_bytes(zlib.compress(bytes(1000 * one_chunk), 9))  # a small zip bomb
    chunk_refused(root, "decodes to more")


def test_a_corrupt_tiff_is_one_line(tmp_path):
    for name, data in (("bad.ome.tif", b"II*\x00" + os.urandom(64)), ("text.tif", b"not a tiff at all")):
        (tmp_path / name).write_bytes(data)
        refused(tmp_path / name, "cannot read image")


def test_a_level_is_indexed_as_a_lazy_image_is(slides, base):
    with open_pyramid(slides["tiff"]) as pyramid:
        level = pyramid.levels[0]
        np.testing.assert_array_equal(level[5, 7], base[5, 7])
        np.testing.assert_array_equal(level[-1, 10:20], base[-1, 10:20])
        np.testing.assert_array_equal(level[10:20, ::-1], base[10:20, ::-1])
        with pytest.raises(IndexError):
            level[SIDE, 0]


def test_a_failed_conversion_closes_the_source_and_leaves_nothing(tmp_path, base, monkeypatch):
    from PIL import Image

    import napari_bloodcell.core.io.pyramid_write as pw
    from napari_bloodcell.core.atomic import STALE_PATTERN

    Image.fromarray(base[:128, :128]).save(tmp_path / "scan.png")
    closed, temps = [], []
    real_source = pw._source

    def source(path):
        handle, read_rows = real_source(path)
        real_close = handle.close
        handle.close = lambda: (closed.append(True), real_close())
        return handle, read_rows

    monkeypatch.setattr(pw, "_source", source)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError):  # the output folder cannot be made: the source is still closed
        pw.write_pyramid(tmp_path / "scan.png", tmp_path / "file" / "scan.ome.tif", tile=64)
    assert closed == [True]

    def publish(tmp, out):
        temps.append(tmp)
        raise RuntimeError("killed here")

    monkeypatch.setattr(pw, "publish", publish)
    with pytest.raises(RuntimeError):
        pw.write_pyramid(tmp_path / "scan.png", tmp_path / "scan.ome.tif", tile=64, smallest=32)
    assert closed == [True, True] and STALE_PATTERN.match(temps[0].name)  # a killed run's file is cleared later
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "scan.png"]


def test_codecs_whose_decoded_size_cannot_be_bounded_are_refused(tmp_path, base):
    root = write_ome_zarr(tmp_path / "codec.zarr", levels_of(base[:128, :128], 1))
    meta = json.loads((root / "0" / ".zarray").read_text())
    for compressor, filters, match in (({"id": "zfpy"}, None, "not supported"),
                                       ({"id": "zlib"}, [{"id": "zstd"}], "at most one")):
        meta["compressor"], meta["filters"] = compressor, filters
        (root / "0" / ".zarray").write_text(json.dumps(meta))
        refused(root, match)
