"""Plugins ▸ Detect cells: runs in the background, adds class-coloured boxes with features, Cancel changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

from napari_bloodcell.core.models.bundled import bundled_for
from napari_bloodcell.gui.widgets.detect import CHECKPOINT, DetectWidget


@pytest.fixture
def recent_home(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOODCELL_HOME", str(tmp_path / "home"))


def wait_idle(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def test_widget_detects_on_the_sample_smear(make_napari_viewer, qtbot, recent_home, sample_data):
    viewer = make_napari_viewer()
    viewer.open(str(sample_data / "smear" / "JPEGImages" / "smear_0000.png"), plugin="napari-bloodcell")
    widget = DetectWidget(viewer)
    # with an empty registry the bundled starter detector is the default; classical stays one click away
    shipped = bundled_for("detector")
    assert widget.image.value is viewer.layers[0] and widget.model.value == ("bundled" if shipped else "classical")
    assert widget.model.choices[-1] == CHECKPOINT and "classical" in widget.model.choices
    widget.model.value = "classical"
    widget.score.value = 0.05
    widget.run()
    assert widget.cancel_button.enabled and not widget.run_button.enabled
    wait_idle(qtbot, widget)
    layer = widget.last_layer
    assert layer is not None and layer in viewer.layers and layer._type_string == "shapes"
    assert len(layer.data) > 20
    features = layer.features
    assert set(features["class"]) <= {"WBC", "RBC", "Platelets"} and "WBC" in set(features["class"])
    assert (features["source"] == "classical").all() and (features["review"] == "unreviewed").all()
    assert features["score"].between(0.05, 1).all()
    assert "WBC" in widget.counts.value and "total" in widget.counts.value
    # RGB layer boxes are 2D rectangles in image pixels
    assert np.asarray(layer.data[0]).shape == (4, 2)
    assert widget.run_button.enabled and not widget.cancel_button.enabled


@pytest.mark.skipif(bundled_for("detector") is None, reason="no bundled detector in this tree")
def test_the_bundled_detector_is_the_default_and_finds_the_white_cells(make_napari_viewer, qtbot, recent_home,
                                                                      sample_data):
    viewer = make_napari_viewer()
    viewer.open(str(sample_data / "smear" / "JPEGImages" / "smear_0000.png"), plugin="napari-bloodcell")
    widget = DetectWidget(viewer)
    assert widget.model.native.currentText().startswith("bundled starter-detector")
    widget.run()
    wait_idle(qtbot, widget)
    features = widget.last_layer.features
    assert features["source"].str.startswith("yolov3_tiny:starter_detector").all()
    assert (features["class"] == "WBC").sum() >= 3 and (features["class"] == "RBC").sum() >= 20


def test_cancel_leaves_the_layers_as_they_were(make_napari_viewer, qtbot, recent_home, sample_data):
    viewer = make_napari_viewer()
    viewer.open(str(sample_data / "smear" / "JPEGImages" / "smear_0001.png"), plugin="napari-bloodcell")
    before = [layer.name for layer in viewer.layers]
    widget = DetectWidget(viewer)
    widget.tile.value = 64  # many small tiles: a long job
    widget.run()
    widget.cancel()
    wait_idle(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == before
    assert "cancelled" in widget.status.value and widget.last_layer is None


def test_a_bad_checkpoint_is_reported_not_raised(make_napari_viewer, qtbot, recent_home, sample_data, tmp_path):
    viewer = make_napari_viewer()
    viewer.open(str(sample_data / "smear" / "JPEGImages" / "smear_0000.png"), plugin="napari-bloodcell")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    widget = DetectWidget(viewer)
    widget.model.value = CHECKPOINT
    assert widget.checkpoint.native.isVisibleTo(widget.native)
    widget.checkpoint.value = bad
    widget.run()
    wait_idle(qtbot, widget)
    assert "not a loadable PyTorch checkpoint" in widget.status.value
    assert len(viewer.layers) == 1


def test_the_registry_active_detector_is_offered_first(make_napari_viewer, recent_home, sample_data, tmp_path):
    import torch

    from napari_bloodcell.core.models.checkpoints import FORMAT, save_checkpoint
    from napari_bloodcell.core.models.detectors import build_detector
    from napari_bloodcell.core.models.registry import ModelRegistry

    model = build_detector("ssdlite320_mobilenet_v3_large", ["RBC", "WBC"], "none", {})
    ckpt = tmp_path / "m.pt"
    save_checkpoint({"format": FORMAT, "arch": model.arch, "arch_args": model.arch_args, "classes": model.classes,
                     "model": {k: v.detach() for k, v in model.state_dict().items()}, "val_metrics": {}}, ckpt)
    entry = ModelRegistry().add(ckpt, "detector", activate=True, extra={"arch": model.arch})
    viewer = make_napari_viewer()
    widget = DetectWidget(viewer)
    assert widget.model.value == str(ModelRegistry().path(entry))
    assert "active detector v0001" in widget.model.native.itemText(0)  # the default, before the bundled one
    assert torch.load(widget.model.value, weights_only=True)["arch"] == "ssdlite320_mobilenet_v3_large"

def test_a_new_run_clears_the_counts_and_the_layer_is_built_off_the_main_thread(make_napari_viewer, qtbot,
                                                                                recent_home, sample_data,
                                                                                monkeypatch):
    """Issue 14: no stale counts during a run; the Shapes layer (features, colours, text) is built in the worker,
    so the viewer's thread only adds it, in steps that end with it shown, with text, and selected."""
    import threading

    from napari.layers import Shapes

    viewer = make_napari_viewer()
    viewer.open(str(sample_data / "smear" / "JPEGImages" / "smear_0000.png"), plugin="napari-bloodcell")
    widget = DetectWidget(viewer)
    widget.run()
    wait_idle(qtbot, widget)
    assert "total" in widget.counts.value
    built_in: list[bool] = []
    original = Shapes.__init__

    def spy(self, *args, **kwargs):
        built_in.append(threading.current_thread() is threading.main_thread())
        original(self, *args, **kwargs)

    monkeypatch.setattr(Shapes, "__init__", spy)
    widget.run()
    assert widget.counts.value == "—"  # not the previous run's counts
    wait_idle(qtbot, widget)
    assert built_in == [False]  # one layer, made in the worker
    layer = widget.last_layer
    qtbot.waitUntil(lambda: viewer.layers.selection.active is layer, timeout=5000)
    assert layer.visible and layer.text.visible and "total" in widget.counts.value


def test_the_job_widgets_fit_a_laptop_screen(make_napari_viewer, qtbot, recent_home):
    """Issue 14: Detect, Segment and Classify docked together: the window stays 1366×768 (they scroll) and the
    canvas keeps at least 55% of the width; status lines wrap instead of widening the dock."""
    from napari_bloodcell.gui.widgets.classify import ClassifyWidget
    from napari_bloodcell.gui.widgets.segment import SegmentWidget

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1366, 768)
    widgets = [DetectWidget(viewer), SegmentWidget(viewer), ClassifyWidget(viewer)]
    for w in widgets:
        viewer.window.add_dock_widget(w, name=type(w).__name__)
    widgets[0].status.value = "a very long status line that would otherwise widen the whole dock " * 4
    qtbot.wait(200)
    assert window.width() <= 1366 and window.height() <= 768
    assert viewer.window._qt_viewer.canvas.native.width() >= 0.55 * 1366
    for w in widgets:
        assert w.native.minimumSizeHint().width() <= 360 and w.native.minimumWidth() <= 360


def test_review_detect_now_builds_its_table_in_the_worker(make_napari_viewer, qtbot, recent_home, sample_data,
                                                          tmp_path, monkeypatch):
    """Issue 14: *detect now* hands the Review widget a ready annotation table; only opening it is left to the
    viewer's thread."""
    import threading

    from napari_bloodcell.core.annotations import AnnotationTable
    from napari_bloodcell.gui.widgets.review import ReviewWidget

    made_in: list[bool] = []
    original = AnnotationTable.from_record.__func__

    def spy(cls, *args, **kwargs):
        made_in.append(threading.current_thread() is threading.main_thread())
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(AnnotationTable, "from_record", classmethod(spy))
    viewer = make_napari_viewer()
    viewer.open(str(sample_data / "smear" / "JPEGImages" / "smear_0000.png"), plugin="napari-bloodcell")
    review = ReviewWidget(viewer)
    review.detect_and_start(reviewer="dr.detect", project=tmp_path / "project")
    qtbot.waitUntil(lambda: review.worker is None and review.session is not None, timeout=120_000)
    assert made_in == [False] and len(review.session.table) > 10
    review.close_session()
