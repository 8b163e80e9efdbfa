"""The shipped starter models: manifest and checksums, the active → bundled → classical choice, YOLOv3-tiny,
the cross-lab augmentation, and the stored tree ensemble of the red-cell morphology model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.models import bundled

SHIPPED = bundled.MANIFEST.is_file()
needs_shipped = pytest.mark.skipif(not SHIPPED, reason="no bundled models in this tree")


def _manifest(tmp_path: Path, entry: dict) -> Path:
    (tmp_path / "m.pt").write_bytes(b"weights")
    manifest = tmp_path / "bundled.json"
    manifest.write_text(json.dumps({"format": "napari-bloodcell/bundled", "models": [entry]}))
    return manifest


def test_manifest_refuses_files_outside_its_folder(tmp_path):
    manifest = _manifest(tmp_path, {"name": "x", "task": "detector", "file": "../evil.pt", "sha256": "0"})
    with pytest.raises(BloodcellInputError, match="manifest"):
        bundled.bundled_models(manifest)


def test_a_damaged_bundled_file_is_refused_by_its_checksum(tmp_path):
    good = hashlib.sha256(b"weights").hexdigest()
    manifest = _manifest(tmp_path, {"name": "x", "task": "detector", "file": "m.pt", "sha256": good})
    model = bundled.bundled_models(manifest)[0]
    assert bundled.verified_file(model) == tmp_path / "m.pt"
    (tmp_path / "m.pt").write_bytes(b"weightz")
    with pytest.raises(BloodcellInputError, match="checksum"):
        bundled.verified_file(model)


def test_default_model_is_active_then_bundled_then_classical(tmp_path, monkeypatch):
    from napari_bloodcell.core.models.registry import ModelRegistry

    monkeypatch.setattr(bundled, "MANIFEST", tmp_path / "none.json")
    assert bundled.default_model("detector", tmp_path / "reg").origin == "classical"
    assert bundled.default_model("classifier", tmp_path / "reg") is None
    good = hashlib.sha256(b"weights").hexdigest()
    manifest = _manifest(tmp_path, {"name": "starter", "task": "detector", "file": "m.pt", "sha256": good,
                                    "arch": "yolov3_tiny"})
    monkeypatch.setattr(bundled, "MANIFEST", manifest)
    choice = bundled.default_model("detector", tmp_path / "reg")
    assert choice.origin == "bundled" and "starter" in choice.label and choice.model == str(tmp_path / "m.pt")
    reg = ModelRegistry(tmp_path / "reg")
    assert [v["id"] for v in reg.listing("detector")] == ["v0000"]
    assert reg.path(reg.active_or_bundled("detector")) == tmp_path / "m.pt"
    ckpt = tmp_path / "mine.pt"
    ckpt.write_bytes(b"user model")
    reg.add(ckpt, "detector", activate=True)
    choice = bundled.default_model("detector", tmp_path / "reg")
    assert choice.origin == "registry" and choice.model.endswith("v0001.pt")
    assert [v["id"] for v in reg.listing("detector")] == ["v0001"]
    # back to the shipped model, and forward again
    reg.activate("v0000", task="detector")
    assert reg.active("detector") is None and bundled.default_model("detector", tmp_path / "reg").origin == "bundled"
    assert reg.rollback("detector")["id"] == "v0001" and reg.active("detector")["id"] == "v0001"
    assert reg.rollback("detector")["id"] == "v0000" and reg.active("detector") is None


def test_yolov3_tiny_trains_at_several_sizes_and_maps_boxes_back():
    from napari_bloodcell.core.models.detectors import build_detector

    torch.manual_seed(0)
    model = build_detector("yolov3_tiny", ["WBC", "RBC", "Platelets"], arch_args={"input_size": 160})
    images = [torch.rand(3, 240, 320), torch.rand(3, 300, 300)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 90.0, 100.0]]), "labels": torch.tensor([0])},
               {"boxes": torch.tensor([[50.0, 50.0, 80.0, 80.0]]), "labels": torch.tensor([2])}]
    model.train()
    model.net.train_sizes = (128,)  # multi-scale: the batch is drawn at one of these sizes
    model(images, targets)
    assert model.net._size == 128
    model.net.train_sizes = (160,)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    first = None
    for _ in range(6):
        loss = sum(model(images, targets).values())
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < first
    model.eval()
    model.set_thresholds(0.0, 0.5, 50)
    out = model([torch.rand(3, 240, 320)])[0]
    assert out["boxes"].shape[1] == 4 and out["boxes"][:, 2].max() <= 320 and out["boxes"][:, 3].max() <= 240
    assert out["labels"].min() >= 0 and out["labels"].max() <= 2


def test_lab_augmentation_moves_the_stain_and_keeps_boxes_with_their_cells():
    from torchvision import tv_tensors

    from napari_bloodcell.core.datasets.stain import hed_jitter, lab_transforms

    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(60, 230, (3, 120, 160), dtype=np.uint8))
    jittered = hed_jitter(image, 0.2, torch.Generator().manual_seed(1))
    assert jittered.dtype == torch.uint8 and jittered.shape == image.shape
    assert (jittered.float() - image.float()).abs().mean() > 1.0
    # a white square on black: after any flip/scale the box still bounds the bright pixels
    canvas = torch.zeros(3, 120, 160, dtype=torch.uint8)
    canvas[:, 40:80, 50:100] = 255
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[50.0, 40.0, 100.0, 80.0]]), format="XYXY",
                                     canvas_size=(120, 160))
    transform = lab_transforms(hed_sigma=0.0)
    for seed in range(10):
        torch.manual_seed(seed)
        img, target = transform(tv_tensors.Image(canvas), {"boxes": boxes, "labels": torch.tensor([1])})
        if not len(target["boxes"]):
            continue
        x1, y1, x2, y2 = (int(round(float(v))) for v in target["boxes"][0])
        bright = img.float().mean(0) > 100
        ys, xs = torch.nonzero(bright, as_tuple=True)
        assert abs(int(xs.min()) - x1) <= 3 and abs(int(ys.max()) + 1 - y2) <= 3


def test_tree_ensemble_predicts_as_scikit_learn():
    from sklearn.ensemble import HistGradientBoostingClassifier

    from napari_bloodcell.core.models.tree_ensemble import export_hist_gradient_boosting, predict_proba

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = (X[:, 0] + 2 * X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    X[rng.random(X.shape) < 0.05] = np.nan
    for labels in (y, (y > 0).astype(int)):  # three classes and the binary case
        model = HistGradientBoostingClassifier(max_iter=8, random_state=0).fit(X, labels)
        trees = export_hist_gradient_boosting(model)
        np.testing.assert_allclose(predict_proba(trees, X), model.predict_proba(X), atol=1e-9)


@needs_shipped
def test_bundled_detector_finds_the_white_cells_of_the_synthetic_smear():
    from napari_bloodcell.core.inference.detect import detect_array, load_predictor
    from napari_bloodcell.core.metrics import iou_matrix
    from napari_bloodcell.core.progress import drain
    from napari_bloodcell.core.synthetic.samples import sample_smear
    from napari_bloodcell.core.synthetic.smear import SMEAR_CLASSES

    predictor = load_predictor("bundled", "cpu")
    assert "bundled" in predictor.label
    wbc_names = {"Neutrophil", "Eosinophil", "Lymphocyte", "Monocyte"}
    found = total = 0
    for index in range(3):
        smear = sample_smear(index)
        truth = smear.boxes[[SMEAR_CLASSES[k] in wbc_names for k in smear.labels]]
        b, lab, _ = drain(detect_array(predictor, smear.image, score=0.3, nms_iou=0.5))
        wbc = b[lab == predictor.classes.index("WBC")]
        total += len(truth)
        found += int((iou_matrix(truth, wbc).max(1) >= 0.5).sum()) if len(wbc) else 0
    assert total >= 4 and found / total >= 0.8, (found, total)


@needs_shipped
def test_bundled_morphology_model_loads_weights_only_and_types_cells():
    from napari_bloodcell.core.red_cell_typing import load_morphology_model, type_cells
    from napari_bloodcell.core.synthetic.samples import sample_smear

    model = load_morphology_model("bundled")
    assert "normal" in model.classes and len(model.classes) == 13
    smear = sample_smear(1)
    rbc = smear.boxes[smear.labels == 0][:20]
    centres = np.column_stack([(rbc[:, 0] + rbc[:, 2]) / 2, (rbc[:, 1] + rbc[:, 3]) / 2])
    types, proba, boxes = type_cells(model, smear.image, centres)
    assert types.shape == (len(centres),) and np.allclose(proba.sum(1), 1.0) and boxes.shape == (len(centres), 4)


@needs_shipped
def test_a_first_retrain_fine_tunes_the_bundled_detector(tmp_path, sample_data):
    from napari_bloodcell.core.export import export_dataset, items_from_project
    from napari_bloodcell.core.io.formats import read_annotations
    from napari_bloodcell.core.progress import drain
    from napari_bloodcell.core.review_project import ReviewProject, import_predictions
    from napari_bloodcell.core.training.retrain import RetrainConfig, retrain_detector

    if bundled.bundled_for("detector") is None:
        pytest.skip("no bundled detector in this tree")
    project = ReviewProject(tmp_path / "project")
    import_predictions(project, read_annotations(sample_data / "smear" / "annotations.json"),
                       review_default="accepted")
    drain(export_dataset(items_from_project(project.folder), tmp_path / "dataset", by="me", crops=False))
    result = drain(retrain_detector(RetrainConfig(dataset=tmp_path / "dataset", registry=tmp_path / "registry",
                                                  epochs=1, batch=2, max_iters_per_epoch=1, activate="always")))
    assert result.parent == "v0000" and result.version["parent"] == "v0000"
    assert result.version["arch"] == "yolov3_tiny" and "starter_detector.pt" in result.version["initial_weights"]
    # the sample's classes (white-cell types) are not the starter's: the parent cannot be scored on them
    assert result.parent_metrics is None and "class list changed" in result.reason
