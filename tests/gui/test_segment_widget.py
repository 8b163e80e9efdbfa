"""Plugins ▸ Segment volume: a NIfTI volume with a rotated, anisotropic affine segmented in the background, the
label map on the image's grid in napari and (after saving) in nibabel, volumes in mm³ following a brush stroke and
its undo, the corrected map exported into a segmentation dataset, and a fresh install saying it needs a model.

The segmenter is a narrow HighRes3DNet with random weights: these tests are about the widget, not the network's
skill (training one here took 30-100 s of the suite's budget)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_bloodcell.core.datasets.volumes import find_cases
from napari_bloodcell.gui._writer import write_labels
from napari_bloodcell.gui.layer_data import volume_text
from napari_bloodcell.gui.widgets.detect import CHECKPOINT
from napari_bloodcell.gui.widgets.segment import SegmentWidget

from ..core.volumes import TINY, write_cases


def random_segmenter(path, names: dict[int, str], patch: int = 16):
    """A segmenter checkpoint as training writes one, with random weights."""
    import torch

    from napari_bloodcell.core.inference.segment3d import build_segmenter_model
    from napari_bloodcell.core.models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    args = {"in_channels": 1, "n_classes": len(names), **TINY}
    model = build_segmenter_model("highres3dnet", args)
    values = sorted(names)
    save_checkpoint({"format": "napari-bloodcell/segmenter", "arch": "highres3dnet", "arch_args": args,
                     "classes": [names[v] for v in values], "label_values": values,
                     "label_names": {str(v): n for v, n in names.items()},
                     "preprocessing": {"normalise": "zscore per volume and channel", "patch": [patch] * 3,
                                       "spacing": None, "channels": 1},
                     "model": {k: v.detach() for k, v in model.state_dict().items()}}, path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vols")
    data = write_cases(folder / "data", 3, shape=(30, 26, 22))
    return random_segmenter(folder / "seg.pt", {0: "background", 1: "ball", 2: "box"}), data


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOODCELL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _segment(viewer, qtbot, model, volume):
    viewer.open(str(volume), plugin="napari-bloodcell")
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.value = CHECKPOINT
    widget.checkpoint.value = model
    widget.patch.value = 16
    widget.device.value = "cpu"
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    return widget


def test_segmentation_lies_on_the_image_in_napari_and_nibabel(make_napari_viewer, qtbot, trained, home, tmp_path):
    model, data = trained
    volume = find_cases(data)[0].images[0]
    viewer = make_napari_viewer()
    widget = _segment(viewer, qtbot, model, volume)
    image, labels = viewer.layers[0], viewer.layers[-1]
    assert labels._type_string == "labels" and labels.name == f"{image.name} segmentation"
    assert labels.data.shape == image.data.shape == (30, 26, 22)
    assert np.allclose(labels.scale, image.scale) and np.allclose(labels.translate, image.translate)
    assert "window(s)" in widget.status.value
    source = nib.load(str(volume))
    assert np.allclose(labels.metadata["affine"], source.affine)
    # saved through the plugin's writer: the NIfTI has the image's affine and shape, and reopens on the image
    out = tmp_path / "seg.nii.gz"
    write_labels(str(out), labels.data, {"metadata": labels.metadata, "scale": labels.scale,
                                         "translate": labels.translate, "name": labels.name})
    saved = nib.load(str(out))
    assert saved.shape == source.shape and np.allclose(saved.affine, source.affine)
    assert np.array_equal(np.asarray(saved.dataobj), labels.data)
    viewer.open(str(out), plugin="napari-bloodcell")
    reopened = viewer.layers[-1]
    assert reopened._type_string == "labels"
    assert np.allclose(reopened.scale, image.scale) and np.allclose(reopened.translate, image.translate)


def test_volumes_follow_a_brush_stroke_and_the_correction_is_exported(make_napari_viewer, qtbot, trained, home,
                                                                       tmp_path):
    model, data = trained
    case = find_cases(data)[1]
    viewer = make_napari_viewer()
    widget = _segment(viewer, qtbot, model, case.images[0])
    labels = viewer.layers[-1]
    voxel = float(np.prod(labels.scale))
    before = int((np.asarray(labels.data) == 1).sum())
    labels.brush_size = 5
    labels.paint((5, 5, 5), 1, refresh=True)  # a stroke of label 1 (the ball)
    painted = np.asarray(labels.data)
    count = int((painted == 1).sum())
    assert count > before
    qtbot.waitUntil(lambda: f"{count * voxel:,.0f} mm³ ({count:,} voxels)" in widget.volumes.value, timeout=5000)
    assert widget.volumes.value.startswith("ball")
    # issue 14: Ctrl+Z (napari's undo writes the voxels back and only re-slices) and redo are followed too
    after_stroke = widget.volumes.value
    labels.undo()
    assert int((np.asarray(labels.data) == 1).sum()) == before
    names = {int(k): v for k, v in labels.metadata["label_names"].items()}
    undone = volume_text(np.asarray(labels.data), tuple(labels.metadata["spacing"]), names)
    assert undone != after_stroke
    qtbot.waitUntil(lambda: widget.volumes.value == undone, timeout=5000)
    labels.redo()
    qtbot.waitUntil(lambda: widget.volumes.value == after_stroke, timeout=5000)
    dataset = tmp_path / "dataset"
    widget.training.dataset.setText(str(dataset))
    widget.training._export()
    manifest = json.loads((dataset / "dataset.json").read_text())
    assert manifest["kind"] == "segmentation" and manifest["labels"]["1"] == "ball"
    (exported,) = find_cases(dataset)
    stored = nib.load(str(exported.label))
    assert np.array_equal(np.asarray(stored.dataobj), painted)
    assert np.allclose(stored.affine, nib.load(str(case.images[0])).affine)
    assert exported.images[0].read_bytes() == case.images[0].read_bytes()  # the image is the user's file, unchanged
    assert "version 1" in widget.training.status.text()


def test_no_volume_is_a_message_not_a_traceback(make_napari_viewer, home):
    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    widget.run()
    assert widget.worker is None
    with pytest.raises(Exception, match="no label map to export"):
        widget.export_items()


def test_a_fresh_install_says_it_needs_a_segmenter_before_the_button_is_pressed(make_napari_viewer, home, trained):
    """Issue 14: no model anywhere: the run button is disabled and the widget says how to get one; a model made
    active in the registry is then the default."""
    from napari_bloodcell.core.models.registry import ModelRegistry

    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    assert widget.model.value == CHECKPOINT and not widget.run_button.enabled
    shown = lambda w: w.blocked.native.isVisibleTo(w.native)
    assert shown(widget) and "No segmenter yet" in widget.blocked.value
    assert "Retrain" in widget.blocked.value and "bloodcell train segmenter" in widget.blocked.value
    ModelRegistry().add(trained[0], "segmenter", activate=True)
    widget.reset_choices()  # as napari does when a layer comes or goes: the newly active model is taken
    active = str(ModelRegistry().active_file("segmenter")[1])
    assert widget.model.value == active and widget.run_button.enabled and not shown(widget)
    widget.model.value = CHECKPOINT  # a person picks "checkpoint file…" to browse: not switched back
    widget.reset_choices()
    assert widget.model.value == CHECKPOINT and not widget.run_button.enabled
    widget.checkpoint.value = trained[0]
    assert widget.run_button.enabled and not shown(widget)
    again = SegmentWidget(viewer)  # opened after the registration: the active model is the default
    assert "active segmenter" in again.model.native.itemText(0)
    assert again.model.value == active and again.run_button.enabled
