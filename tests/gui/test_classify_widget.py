"""Plugins ▸ Classify cells and detect-and-classify: white cells typed in the background, their margins sending the
uncertain ones to the front of the review queue, and the differential counting types and following changes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_bloodcell.core.io.formats import read_annotations
from napari_bloodcell.core.io.records import AnnotationSet, ImageRecord
from napari_bloodcell.core.models.registry import ModelRegistry
from napari_bloodcell.core.progress import drain
from napari_bloodcell.core.training.classification import (
    ClassifierTrainConfig,
    train_classifier,
)
from napari_bloodcell.gui.layers import shapes_layer
from napari_bloodcell.gui.widgets.classify import ClassifyWidget
from napari_bloodcell.gui.widgets.detect import DetectWidget
from napari_bloodcell.gui.widgets.review import ReviewWidget

from ..core.cells import wbc_fields

TYPES = ["Neutrophil", "Eosinophil", "Lymphocyte", "Monocyte"]
ME = "dr.classify"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wbc")
    coco = wbc_fields(folder / "fields", n=8)
    out = folder / "wbc.pt"
    drain(train_classifier(ClassifierTrainConfig(arch="googlenet", data=coco, classes=TYPES, out=out, epochs=3,
                                                 batch=8, input_size=64, optimizer="adam", lr=1e-3,
                                                 box_class="WBC")))
    return out, coco


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOODCELL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def detector_view(viewer, coco):
    """The first synthetic field with its ground-truth boxes as a detector would name them (RBC, WBC, Platelets)."""
    truth = read_annotations(coco)
    rec = truth.images[0]
    classes = ["RBC", "WBC", "Platelets"]
    labels = [classes.index("WBC" if truth.classes[k] in TYPES else truth.classes[k]) for k in rec.labels]
    boxes = AnnotationSet(classes, [ImageRecord(rec.file_name, rec.width, rec.height, rec.boxes, labels,
                                                scores=np.full(len(rec), 0.9), sources=["det"] * len(rec),
                                                reviews=["unreviewed"] * len(rec), path=rec.path)])
    viewer.open(str(rec.path), plugin="napari-bloodcell")
    data, kwargs, _ = shapes_layer(boxes, "cells", stacked=False)
    return viewer.add_shapes(data, **kwargs), rec, truth


def test_classify_widget_types_white_cells_and_the_review_puts_uncertain_first(make_napari_viewer, qtbot, trained,
                                                                             home, tmp_path):
    model, coco = trained
    viewer = make_napari_viewer()
    layer, _, _ = detector_view(viewer, coco)
    widget = ClassifyWidget(viewer)
    widget.boxes.value = layer
    assert widget.target.value == "WBC"
    widget.model.value = widget.model.choices[-1]  # checkpoint file…
    widget.checkpoint.value = model
    wbc = np.flatnonzero(layer.features["class"].astype(str).to_numpy() == "WBC")
    widget.counts.value = "Neutrophil: 99"  # a previous run's types
    widget.run()
    assert widget.counts.value == "—"  # cleared while this run works (issue 14)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    names = layer.features["class"].astype(str).to_numpy()
    assert set(names[wbc]) <= set(TYPES) and "WBC" not in set(names)
    assert np.isfinite(layer.features["margin"].to_numpy()[wbc]).all()
    assert np.isnan(layer.features["margin"].to_numpy()[np.setdiff1d(np.arange(len(names)), wbc)]).all()
    attrs = json.loads(layer.features["attributes"].iloc[wbc[0]])
    assert set(attrs["class_probabilities"]) == set(TYPES) and attrs["classified_by"].startswith("googlenet")
    assert "cell(s) typed" in widget.status.value

    review = ReviewWidget(viewer)
    review.project_edit.setText(str(tmp_path / "project"))
    review.reviewer_edit.setText(ME)
    review.boxes_combo.setCurrentText(layer.name)
    review.start()
    table = review.session.table
    margins = table.col("margin")
    typed = np.flatnonzero(np.isfinite(margins))
    assert len(typed) == len(wbc)
    queue = table.queue()
    assert queue[0] == table.ids[typed[np.argmin(margins[typed])]]  # the least certain white cell first
    assert "classifier:" in review.cell_label.text()
    diff = review.differential.diff
    assert [r.name for r in diff.rows] == TYPES and diff.total == len(wbc)  # a white-cell differential
    first = int(queue[0])
    review.assign("Monocyte")
    qtbot.waitUntil(lambda: review.differential.diff.rows[3].count == int(
        (table.col("label")[typed] == table.classes.index("Monocyte")).sum()))
    assert table.object_info(first)["class"] == "Monocyte"
    current = review.session.display.current
    review.flags_edit.setText("toxic granulation, vacuolated")  # multi-label flags typed by the reviewer
    review.set_flags()
    assert table.object_info(current)["flags"] == ["toxic granulation", "vacuolated"]
    assert table.object_info(current)["changed_by"] == ME
    review.undo()
    assert table.object_info(current)["flags"] == []
    review.close_session()


def test_detect_and_classify_in_one_step(make_napari_viewer, qtbot, trained, home):
    model, coco = trained
    registry = ModelRegistry()
    registry.add(model, "classifier", activate=True)
    viewer = make_napari_viewer()
    rec = read_annotations(coco).images[1]
    viewer.open(str(rec.path), plugin="napari-bloodcell")
    detect = DetectWidget(viewer)
    choice = [c for c in detect.classifier.choices if c]
    assert choice and "active classifier" in detect.classifier.native.itemText(1)
    typer = ClassifyWidget(viewer)  # the registry's active classifier is the default, ready to run
    assert "active classifier" in typer.model.native.itemText(0) and typer.model.value == choice[0]
    assert typer.run_button.enabled and not typer.blocked.native.isVisibleTo(typer.native)
    detect.classifier.value = choice[0]
    detect.score.value = 0.05
    detect.run()
    qtbot.waitUntil(lambda: detect.worker is None, timeout=120_000)
    layer = detect.last_layer
    assert layer is not None
    names = set(layer.features["class"].astype(str))
    assert names & set(TYPES), names  # the classical detector's white cells come back typed
    assert "margin" in json.loads(layer.features["attributes"].iloc[
        int(np.flatnonzero(layer.features["class"].astype(str).isin(TYPES).to_numpy())[0])])


def test_a_fresh_install_says_it_needs_a_classifier_before_the_button_is_pressed(make_napari_viewer, home, tmp_path):
    """Issue 14: no classifier anywhere: the run button is disabled, with a line that says where to get one."""
    from napari_bloodcell.gui.widgets.jobs import CHECKPOINT

    viewer = make_napari_viewer()
    widget = ClassifyWidget(viewer)
    assert widget.model.value == CHECKPOINT and not widget.run_button.enabled
    assert widget.blocked.native.isVisibleTo(widget.native)
    assert "No classifier yet" in widget.blocked.value and "Review ▸ Retrain" in widget.blocked.value
    assert "bloodcell train classifier" in widget.blocked.value and "--task classifier" in widget.blocked.value
    widget.run()  # pressed anyway (from a script): refused with the same explanation, nothing started
    assert widget.worker is None
    widget.checkpoint.value = tmp_path / "gone.pt"
    assert "no such file" in widget.blocked.value and not widget.run_button.enabled
