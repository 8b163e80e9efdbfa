"""Region review of a large lazy scan: only the region's cells are opened, the image is never read whole, the
autosave's change log restores the edits, and saving keeps every cell outside the region as it was."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_bloodcell.core.io import lazy_images
from napari_bloodcell.core.io.records import AnnotationSet, ImageRecord
from napari_bloodcell.core.review_project import ReviewProject, import_predictions
from napari_bloodcell.gui.widgets.review import GALLERY_TAB, ReviewWidget
from napari_bloodcell.gui.widgets.review_field import parse_region

SIDE = 2048
REGION = (512, 1536, 512, 1536)


@pytest.fixture
def slide(tmp_path, monkeypatch):
    """A tiled 2048² TIFF read lazily (the lazy threshold lowered) and a project of 60 cells, 20 in the region."""
    monkeypatch.setenv("BLOODCELL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BLOODCELL_LAZY_PIXELS", "1000000")
    monkeypatch.setattr(lazy_images, "CHUNK_SIDE", 512)  # napari reads 512² chunks of it, as of a real scan
    path = tmp_path / "slide.tif"
    pixels = np.full((SIDE, SIDE, 3), 220, np.uint8)
    pixels[::40] = 120
    tifffile.imwrite(path, pixels, tile=(512, 512), photometric="rgb", compression="zlib")
    rng = np.random.default_rng(1)
    inside = rng.uniform(560, 1480, (20, 2))
    outside = np.vstack([rng.uniform(10, 450, (20, 2)), rng.uniform(1560, 2000, (20, 2))])
    xy = np.vstack([inside, outside])
    rec = ImageRecord(path.name, SIDE, SIDE, boxes=np.hstack([xy, xy + 30]), labels=np.zeros(60, np.int64),
                      scores=np.r_[np.full(20, 0.9), np.full(40, 0.2)], sources=["model"] * 60,
                      reviews=["unreviewed"] * 60, path=path)
    project = ReviewProject(tmp_path / "project")
    import_predictions(project, AnnotationSet(["RBC", "WBC", "Platelets"], [rec]))
    return path, project


def test_a_region_of_a_lazy_scan_opens_alone_and_saves_back_into_the_field(make_napari_viewer, qtbot, slide,
                                                                           monkeypatch):
    path, project = slide
    reads = []
    real_read = lazy_images.LazyImage.read
    monkeypatch.setattr(lazy_images.LazyImage, "read",
                        lambda self, y0, y1, x0, x1: reads.append((y1 - y0) * (x1 - x0)) or real_read(self, y0, y1,
                                                                                                       x0, x1))
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-bloodcell")
    widget = ReviewWidget(viewer)
    qtbot.addWidget(widget)
    widget.project_edit.setText(str(project.folder))
    widget.reviewer_edit.setText("dr.region")
    widget.set_region(REGION)
    widget.start()
    s = widget.session
    assert s is not None, widget.cell_label.text()
    assert len(s.table) == 20 and len(s.outside) == 40  # only the region's cells are in the layers
    assert hasattr(viewer.layers[0].data, "dask") and not isinstance(s.pixels, np.ndarray)  # still lazy
    before = {int(i): r for i, r in zip(s.outside.columns["id"], s.outside.columns["review"])}

    ids = s.table.ids[:5]
    s.display.select_ids(ids)
    widget.assign(1)  # five cells become WBC
    drawn = s.table.add([[1000, 1000, 1030, 1030]], [2], by="dr.region")  # and the reviewer draws one
    widget.tabs.setCurrentIndex(GALLERY_TAB)  # thumbnails come out of the lazy scan region by region
    widget.gallery.refresh()
    assert sum(view.count() for view in widget.gallery.lists.values()) == 21
    s.saver.flush()
    assert project.change_log(s.key).is_file()  # the changes are in the log, the snapshot is not rewritten
    logged = project.load(s.key)[0]  # snapshot + log: what a crash now would leave
    assert len(logged) == 61 and (logged.col("label")[logged.positions(ids)] == 1).all()

    with pytest.raises(Exception, match="outside this region"):
        widget._sign()  # 40 uncertain cells outside the region are still unreviewed
    widget.close_session()
    assert not project.change_log(s.key).exists()  # folded into one snapshot on close
    saved = project.load(s.key)[0]
    assert len(saved) == 61 and int(drawn[0]) in saved
    assert (saved.col("label")[saved.positions(ids)] == 1).all()
    out = saved.positions(list(before))
    assert [saved.col("review")[p] for p in out] == list(before.values())  # the cells outside are untouched
    assert reads and max(reads) < SIDE * SIDE  # no read of the whole scan


def test_regions_are_parsed_and_clipped():
    assert parse_region("") is None
    assert parse_region("10:20, 30:40") == (10, 20, 30, 40)
    assert parse_region("-5:5000, 0:100", (1000, 800)) == (0, 1000, 0, 100)
    with pytest.raises(Exception, match="y0:y1"):
        parse_region("10:20")


def test_the_change_log_is_replayed_and_a_torn_last_line_is_skipped(tmp_path):
    from napari_bloodcell.core.annotations import AnnotationTable
    from napari_bloodcell.core.review_project import Autosaver

    project = ReviewProject(tmp_path / "p")
    table = AnnotationTable(["RBC", "WBC"])
    table.add([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [0, 0, 0], by="model", review="unreviewed")
    project.save("k", table, {"file_name": "a.png"})
    loaded = project.load("k")[0]
    saver = Autosaver(project, "k", loaded, {"file_name": "a.png"}, background=True, delay=0)
    saver.resume(project.log_ids["k"])
    loaded.set_class([1], 1, by="me")
    loaded.delete([2], by="me")
    saver.flush()  # then the session crashes (this saver is never closed) while writing the next line
    with open(project.change_log("k"), "a") as fh:
        fh.write('{"log_id": "' + str(project.log_ids["k"]) + '", "cells": {"id": [1')  # a crash mid-write
    back = project.load("k")[0]
    assert back.ids.tolist() == [1, 3] and back.col("label").tolist() == [1, 0]
    # the review resumed after the crash: its first change is not glued onto the torn line
    again = Autosaver(project, "k", back, {"file_name": "a.png"}, background=True, delay=0)
    again.resume(project.log_ids["k"])
    back.set_class([3], 1, by="me")
    again.flush()
    third = project.load("k")[0]
    assert third.ids.tolist() == [1, 3] and third.col("label").tolist() == [1, 1]
    again.close()
    assert not project.change_log("k").exists() and project.load("k")[0].col("label").tolist() == [1, 1]


def test_snapshots_are_captured_on_the_editing_thread(tmp_path, monkeypatch):
    import threading

    from napari_bloodcell.core import review_project
    from napari_bloodcell.core.annotations import AnnotationTable
    from napari_bloodcell.core.review_project import Autosaver

    threads = []
    real = review_project.capture
    monkeypatch.setattr(review_project, "capture", lambda t: threads.append(threading.current_thread()) or real(t))
    project = ReviewProject(tmp_path / "p")
    table = AnnotationTable(["RBC", "WBC"])
    table.add([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0], by="model", review="unreviewed")
    saver = Autosaver(project, "k", table, {"file_name": "a.png"}, background=True, delay=0)
    table.set_class([1], 1, by="me")  # no snapshot yet: this change is captured whole
    saver.flush()
    first = saver.log_id
    saver._log_bytes = 4 << 20  # the log has outgrown the snapshot: the next append asks for a compaction
    table.set_class([2], 1, by="me")
    saver.flush()
    assert saver.log_id == first and project.change_log("k").exists()
    table.delete([2], by="me")  # captured whole, here
    saver.flush()
    assert saver.log_id != first and not project.change_log("k").exists()
    assert len(threads) == 2 and all(t is threading.main_thread() for t in threads)
    saver.close()
    assert project.load("k")[0].ids.tolist() == [1] and threads[-1] is threading.main_thread()


def test_nesting_depth_counts_brackets_outside_strings_only():
    from napari_bloodcell.core.untrusted import _nesting_depth

    cases = {'{"a":[1,[2,{"b":"[[[\\"["}]]}': 4, '"x"': 0, '{"a":"\\\\","b":[[1]]}': 3,
             '[[["\\\\\\"]"]]]': 3, "[" * 200_000: 200_000, '["' + "\\" * 2_000_000 + '", [1]]': 2}
    for text, depth in cases.items():
        assert _nesting_depth(text) == depth  # (the long run of backslashes in well under a second)


def test_damaged_change_log_lines_are_skipped_never_raised(tmp_path):
    import json

    from napari_bloodcell.core.annotations import AnnotationTable
    from napari_bloodcell.core.review_project import rows_json

    project = ReviewProject(tmp_path / "p")
    table = AnnotationTable(["RBC", "WBC"])
    table.add([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0], by="model", review="unreviewed")
    project.save("k", table, {"file_name": "a.png"})
    project.load("k")
    log_id = project.log_ids["k"]
    table.set_class([1], 1, by="me")
    cells = json.dumps(rows_json(table.rows.take(table.positions([1]))))
    line = '{"log_id": "%s", "cells": %s%s}' % (log_id, cells, "%s")
    bad = [', "removed": "x"', ', "removed": ["x"]', ', "removed": 5', ', "removed": [1e400]', ', "next_id": "x"',
           ', "next_id": 1e400', ', "revision": [1]', ', "revision": -3', ', "signed": "yes"', ', "at": NaN']
    lines = [line % b for b in bad] + ["[" * 100_000 + "]" * 100_000, "{" * 50 + "\u0000", ""]
    project.change_log("k").write_text("\n".join(lines) + "\n")
    assert project.load("k")[0].col("label").tolist() == [0, 0]  # every line is damaged: the snapshot as it was
    project.change_log("k").write_text("\n".join(lines + [line % ', "removed": [], "revision": 2']) + "\n")
    assert project.load("k")[0].col("label").tolist() == [1, 0]  # the good line after them is replayed


def test_a_folder_and_a_very_large_file_get_a_cheap_identity_digest(tmp_path, monkeypatch):
    from napari_bloodcell.core import image_identity
    from napari_bloodcell.core.review_project import image_digest

    zarr = tmp_path / "scan.ome.zarr"
    (zarr / "0").mkdir(parents=True)
    (zarr / ".zattrs").write_text('{"multiscales": []}')
    (zarr / "0" / "0.0").write_bytes(b"pixels")
    first = image_digest(zarr)
    assert len(first) == 16 and int(first, 16) >= 0
    (zarr / ".zattrs").write_text('{"multiscales": [1]}')
    assert image_digest(zarr) != first  # its metadata are part of it
    big = tmp_path / "big.tif"
    big.write_bytes(bytes(range(256)) * 40_000)
    whole = image_digest(big)
    monkeypatch.setattr(image_identity, "WHOLE_HASH_BYTES", 1000)  # (64 MB)
    monkeypatch.setattr(image_identity, "_DIGESTS", {})
    cheap = image_digest(big)
    assert cheap != whole and image_digest(big) == cheap
    copy = tmp_path / "copy.tif"
    copy.write_bytes(big.read_bytes())
    assert image_digest(copy) == cheap  # a copy (another time stamp) finds the same review
