"""Plugins ▸ Review cells: keys reclassify and accept, undo works, drawn boxes are the reviewer's, the review is
restored after reopening, sign-off waits for the uncertain cells, the differential follows, export and retrain run."""

from __future__ import annotations

import numpy as np
import pytest

from napari_bloodcell.core.review_project import ReviewProject
from napari_bloodcell.gui.widgets.detect import DetectWidget
from napari_bloodcell.gui.widgets.review import ReviewWidget

ME = "dr.review"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOODCELL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def detected_viewer(make_napari_viewer, qtbot, sample_data, name="smear_0000.png"):
    viewer = make_napari_viewer()
    viewer.open(str(sample_data / "smear" / "JPEGImages" / name), plugin="napari-bloodcell")
    detect = DetectWidget(viewer)
    detect.score.value = 0.05
    detect.run()
    qtbot.waitUntil(lambda: detect.worker is None, timeout=120_000)
    return viewer


def started(viewer, tmp_path) -> ReviewWidget:
    widget = ReviewWidget(viewer)
    widget.project_edit.setText(str(tmp_path / "project"))
    widget.reviewer_edit.setText(ME)
    widget.boxes_combo.setCurrentText([layer.name for layer in viewer.layers if layer._type_string == "shapes"][0])
    widget.start()
    assert widget.session is not None, widget.cell_label.text()
    return widget


def sample_under_review(make_napari_viewer, qtbot, tmp_path):
    """The README's first command: the sample smear, detected now and under review."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-bloodcell", "smear")
    review = ReviewWidget(viewer)
    review.detect_and_start(reviewer=ME, project=tmp_path / "project")
    qtbot.waitUntil(lambda: review.worker is None, timeout=120_000)
    return viewer, review


def press(viewer, key: str) -> None:
    viewer.window._qt_viewer.canvas._key_map_handler.press_key(key)


def test_keys_reclassify_accept_undo_and_restore(make_napari_viewer, qtbot, sample_data, home, tmp_path):
    viewer = detected_viewer(make_napari_viewer, qtbot, sample_data)
    widget = started(viewer, tmp_path)
    s = widget.session
    table = s.table
    assert viewer.layers.selection.active is s.display.markers
    first = s.display.current
    assert first == table.queue()[0]  # least certain first
    wbc = table.classes.index("WBC") + 1
    press(viewer, str(wbc))  # key on the selected markers layer
    info = table.object_info(first)
    assert info["class"] == "WBC" and info["changed_by"] == ME
    assert s.display.current != first  # moved on to the next unreviewed cell
    second = s.display.current
    viewer.layers.selection.active = viewer.layers[0]  # keys also work with the image layer selected
    press(viewer, "A")
    assert table.object_info(second)["review"] == "accepted"
    press(viewer, "Control-Z")
    assert table.object_info(second)["review"] == "unreviewed"
    press(viewer, "Control-Shift-Z")
    assert table.object_info(second)["review"] == "accepted"
    widget.go_to(second)
    press(viewer, "Delete")
    assert table.object_info(second)["review"] == "rejected"
    assert s.display.outlines.edge_color[4 * table.positions([second])[0], 3] > 0  # outlines follow a moment later
    qtbot.waitUntil(lambda: s.display.outlines.edge_color[4 * table.positions([second])[0], 3] == 0)  # hidden
    press(viewer, "N")
    press(viewer, "P")

    # a box drawn in the edit layer belongs to the reviewer and is 'corrected'
    n = len(table)
    s.display.edit.add_rectangles(np.array([[10, 10], [10, 40], [40, 40], [40, 10]]))
    s.display.edit.events.data(value=s.display.edit.data, action="added", data_indices=(-1,), vertex_indices=((),))
    assert len(table) == n + 1
    new = table.object_info(int(table.ids[-1]))
    assert new["source"] == ME and new["review"] == "corrected" and new["box"] == [10.0, 10.0, 40.0, 40.0]

    # the differential follows the table (after its short debounce)
    white = table.col("label") == table.classes.index("WBC")  # a white-cell differential: red cells apart
    qtbot.waitUntil(lambda: widget.differential.diff.total == int((white & ~np.isin(table.col("review"),
                                                                                    ["rejected", "not_classed"])).sum()),
                    timeout=15_000)
    assert "Counted apart: RBC" in widget.differential.summary.text()
    assert widget.differential.write(tmp_path / "diff.csv").is_file()

    # Shift+A accepts every unreviewed cell the model was sure of, in one undoable step
    certain = (table.col("review") == "unreviewed") & ~table.uncertain_mask(widget.threshold.value())
    press(viewer, "Shift-A")
    assert (table.col("review")[certain] == "accepted").all()
    assert set(table.col("review")[table.uncertain_mask(widget.threshold.value())]) >= {"unreviewed"}

    # sign-off waits for the uncertain cells
    assert not widget.buttons["Sign"].isEnabled()
    widget.sign()
    assert table.signed is None and "cannot sign" in widget.cell_label.text()
    table.set_review(table.blocking_signoff(widget.threshold.value()), "accepted", by=ME)
    widget.sign()
    assert table.signature_valid and "Signed by dr.review" in widget.sign_label.text()

    # reopening the image restores the review from the project sidecar
    assert s.saver.flush()
    labels = table.col("label").copy()
    widget.start()
    assert widget.session is not s and np.array_equal(widget.session.table.col("label"), labels)
    assert widget.session.table.signature_valid
    assert len(ReviewProject(tmp_path / "project", create=False).keys()) == 1
    widget.close_session()


def test_moving_the_current_box_in_the_edit_layer_corrects_it(make_napari_viewer, qtbot, sample_data, home,
                                                              tmp_path):
    viewer = detected_viewer(make_napari_viewer, qtbot, sample_data)
    widget = started(viewer, tmp_path)
    s = widget.session
    current = s.display.current
    before = s.table.object_info(current)["box"]
    moved = np.asarray(s.display.edit.data[0]) + 5.0  # a person drags the rectangle 5 px down and right
    s.display.edit.data = [moved]
    s.display.edit.events.data(value=s.display.edit.data, action="changed", data_indices=(0,), vertex_indices=((),))
    info = s.table.object_info(current)
    assert info["box"] == [b + 5.0 for b in before] and info["review"] == "corrected" and info["changed_by"] == ME
    pos = s.table.positions([current])[0]
    assert np.allclose(s.display.outlines.data[4 * pos, 0], [before[1] + 5, before[0] + 5])  # outline redrawn
    widget.undo()
    assert s.table.object_info(current)["box"] == before
    widget.close_session()


def test_selection_of_many_cells_changes_class_at_once(make_napari_viewer, qtbot, sample_data, home, tmp_path):
    viewer = detected_viewer(make_napari_viewer, qtbot, sample_data, "smear_0001.png")
    widget = started(viewer, tmp_path)
    table = widget.session.table
    widget.session.display.markers.selected_data = set(range(10))
    widget.assign("Platelets")
    assert (table.col("label")[:10] == table.classes.index("Platelets")).all()
    assert widget.session.display.markers.selected_data == set()
    # gallery: a thumbnail per cell of each class, and moving selected thumbnails reclassifies
    widget.gallery.refresh()
    view = widget.gallery.lists["Platelets"]
    assert view.count() == int((table.col("label") == table.classes.index("Platelets")).sum())
    view.item(0).setSelected(True)
    widget.gallery.tabs.setCurrentWidget(view)
    widget.gallery._move_selected("RBC")
    assert (table.col("label") == table.classes.index("Platelets")).sum() == view.count() - 1
    widget.gallery.refresh()
    view.item(0).setSelected(True)
    widget.gallery._move_selected("Not classed", view)  # what the right-click menu calls
    assert (table.col("review") == "not_classed").sum() == 1
    widget.close_session()


def test_export_and_retrain_from_the_widget(make_napari_viewer, qtbot, sample_data, home, tmp_path):
    viewer = detected_viewer(make_napari_viewer, qtbot, sample_data)
    widget = started(viewer, tmp_path)
    table = widget.session.table
    table.set_review(table.queue(), "accepted", by=ME)
    widget.export(tmp_path / "dataset")
    qtbot.waitUntil(lambda: (tmp_path / "dataset" / "dataset.json").is_file(), timeout=60_000)
    qtbot.waitUntil(lambda: "dataset version 1" in widget.training.status.text(), timeout=60_000)
    # what the export wrote is the review: the field, and every box with the class the reviewer left on it
    from napari_bloodcell.core.io.dataset import dataset_coco_path
    from napari_bloodcell.core.io.formats import read_annotations

    exported = read_annotations(dataset_coco_path(tmp_path / "dataset", 1))
    (field,) = exported.images
    names = sorted(exported.classes[k] for k in field.labels)
    assert names == sorted(table.classes[k] for k in table.col("label")) and len(names) == len(table)
    # one image cannot be split into training and validation: said before Retrain is pressed, which is disabled
    panel = widget.training
    panel.dataset.setText(str(tmp_path / "dataset"))
    panel.registry.setText(str(tmp_path / "registry"))
    panel.arch.setCurrentText("ssdlite320_mobilenet_v3_large")
    panel.epochs.setValue(1)
    panel.max_iters.setValue(1)
    assert not panel.retrain_button.isEnabled()
    assert "needs at least 2 reviewed images" in panel.status.text(), panel.status.text()
    panel.start()
    # nothing registered: the table shows the bundled starter detector as v0000, in use
    from napari_bloodcell.core.models.bundled import bundled_for

    shipped = bundled_for("detector") is not None
    assert not panel.running and panel.models.rowCount() == int(shipped)
    assert not shipped or panel.models.item(0, 0).text() == "* v0000 (bundled)"

    # with the other sample field in the project, export version 2 and retrain: a live plot, then a version
    from napari_bloodcell.core.io.formats import read_annotations
    from napari_bloodcell.core.review_project import import_predictions

    import_predictions(widget.session.project, read_annotations(sample_data / "smear" / "annotations.json"))
    panel.views["voc"].setChecked(True)
    panel.export_button.click()
    qtbot.waitUntil(lambda: "dataset version 2" in widget.training.status.text(), timeout=60_000)
    assert (tmp_path / "dataset" / "versions" / "v0002" / "voc" / "Annotations").is_dir()
    assert panel.retrain_button.isEnabled() and "needs at least" not in panel.status.text()
    panel.start()
    assert panel.running and not panel.retrain_button.isEnabled()
    qtbot.waitUntil(lambda: not panel.running, timeout=240_000)
    assert "registered v0001 (now active)" in panel.status.text(), panel.status.text()
    assert panel.losses and panel.maps and panel.models.rowCount() == 1
    assert panel.models.item(0, 0).text() == "* v0001"
    widget.close_session()


def test_detect_now_starts_the_review_and_reopening_restores_it(make_napari_viewer, qtbot, home, tmp_path):
    """*Detect now* (what `bloodcell view --sample smear --review` uses): detections go straight into the review."""
    viewer, review = sample_under_review(make_napari_viewer, qtbot, tmp_path)
    assert review.session is not None and len(review.session.table) > 20
    from napari_bloodcell.core.inference.detect import load_predictor

    assert set(review.session.table.col("source")) == {load_predictor("auto").model_id}  # the bundled detector
    table = review.session.table
    table.set_class(table.queue()[:1], "WBC", by=ME)
    review.session.saver.flush()
    review.detect_and_start()  # the field already has a review: restored, not detected again
    assert review.worker is None and review.session.table.revision == table.revision
    review.close_session()


def test_a_field_without_boxes_is_reviewed_by_drawing(make_napari_viewer, qtbot, sample_data, home, tmp_path):
    """*(none: draw boxes)*, like any field with no detections: no error, no stray layer, drawn boxes are cells."""
    from napari_bloodcell.gui.widgets.review import NO_BOXES

    viewer = make_napari_viewer()
    viewer.open(str(sample_data / "smear" / "JPEGImages" / "smear_0000.png"), plugin="napari-bloodcell")
    n_layers = len(viewer.layers)
    widget = ReviewWidget(viewer)
    widget.project_edit.setText(str(tmp_path / "project"))
    widget.reviewer_edit.setText(ME)
    widget.boxes_combo.setCurrentText(NO_BOXES)
    widget.start()
    assert widget.session is not None and len(widget.session.table) == 0, widget.cell_label.text()
    assert len(viewer.layers) == n_layers + 3
    edit = widget.session.display.edit
    edit.add_rectangles(np.array([[10, 10], [10, 40], [40, 40], [40, 10]]))
    edit.events.data(value=edit.data, action="added", data_indices=(-1,), vertex_indices=((),))
    assert len(widget.session.table) == 1 and widget.session.display.current == int(widget.session.table.ids[0])
    assert len(widget.session.display.markers.data) == 1
    widget.close_session()


def test_restarting_a_review_reuses_its_layers(make_napari_viewer, qtbot, sample_data, home, tmp_path):
    """Removing a non-empty Shapes layer and adding another segfaults napari under software OpenGL: a restarted or
    closed review empties and hides its layers, and the next review fills the same ones."""
    viewer = detected_viewer(make_napari_viewer, qtbot, sample_data)
    widget = started(viewer, tmp_path)
    first = list(widget.session.display.layers)
    n_layers = len(viewer.layers)
    widget.start()  # Start again: the same field is restored into the same layers
    assert [id(x) for x in widget.session.display.layers] == [id(x) for x in first]
    assert len(viewer.layers) == n_layers and len(first[1].data) == len(widget.session.table)
    widget.close_session()
    assert all(layer in viewer.layers and not layer.visible for layer in first)
    assert len(first[0].data) == len(first[1].data) == len(first[2].data) == 0
    names = [layer.name for layer in viewer.layers if layer._type_string == "shapes"]
    assert widget.boxes_combo.findText(first[2].name) == -1 and first[2].name in names
    widget.start()
    assert [id(x) for x in widget.session.display.layers] == [id(x) for x in first]
    assert all(layer.visible for layer in first) and len(first[1].data) == len(widget.session.table)
    widget.close_session()


def test_the_sample_review_exports_its_in_memory_image(make_napari_viewer, qtbot, home, tmp_path):
    """`bloodcell view --sample smear --review` ▸ Export: the sample has no file; its pixels go into the dataset."""
    from napari_bloodcell.core.io.images import read_image

    viewer, review = sample_under_review(make_napari_viewer, qtbot, tmp_path)
    table = review.session.table
    table.set_review(table.queue(), "accepted", by=ME)
    review.export(tmp_path / "dataset")
    qtbot.waitUntil(lambda: "dataset version 1" in review.training.status.text(), timeout=60_000)
    stored = list((tmp_path / "dataset" / "images").iterdir())
    assert len(stored) == 1
    np.testing.assert_array_equal(read_image(stored[0]), review.session.pixels)
    review.close_session()


def test_the_cell_line_follows_drawn_boxes_and_undo_returns_to_the_cell(make_napari_viewer, qtbot, sample_data,
                                                                        home, tmp_path):
    viewer = detected_viewer(make_napari_viewer, qtbot, sample_data)
    source = [layer for layer in viewer.layers if layer._type_string == "shapes"][0]
    widget = started(viewer, tmp_path)
    s = widget.session
    assert not source.visible  # the source boxes do not mix with the review's
    first = s.display.current
    press(viewer, "A")
    assert s.display.current != first
    press(viewer, "Control-Z")
    assert s.display.current == first and f"Cell {first}:" in widget.cell_label.text()
    press(viewer, "Control-Shift-Z")
    assert s.display.current == first and "accepted" in widget.cell_label.text()
    s.display.edit.add_rectangles(np.array([[10, 10], [10, 40], [40, 40], [40, 10]]))
    s.display.edit.events.data(value=s.display.edit.data, action="added", data_indices=(-1,), vertex_indices=((),))
    new = int(s.table.ids[-1])
    assert s.display.current == new and f"Cell {new}:" in widget.cell_label.text()
    widget.close_session()


def test_docked_from_the_plugin_menu_the_review_layers_show(make_napari_viewer, qtbot, home, tmp_path):
    """Docked through napari's menu the widget sees the viewer through a proxy, whose layers are other objects:
    the review must still tell its own layers from the ones it hides."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-bloodcell", "smear")
    _, review = viewer.window.add_plugin_dock_widget("napari-bloodcell", "Review cells")
    review.detect_and_start(reviewer=ME, project=tmp_path / "project")
    qtbot.waitUntil(lambda: review.worker is None, timeout=120_000)
    shown = {layer.name: layer.visible for layer in viewer.layers}
    assert shown == {"synthetic smear": True, "synthetic smear boxes": False, "cells: synthetic smear": True,
                     "review: synthetic smear": True, "edit: synthetic smear": True}, shown
    assert review.boxes_combo.findText("edit: synthetic smear") == -1
    review.close_session()
