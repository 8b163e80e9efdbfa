"""Exported datasets are versioned and never overwritten; the registry keeps every model and rolls back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_bloodcell.core.annotations import AnnotationTable
from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.export import ExportItem, export_dataset, items_from_project
from napari_bloodcell.core.io.dataset import dataset_coco_path, read_manifest
from napari_bloodcell.core.io.formats import read_annotations
from napari_bloodcell.core.io.images import png_bytes
from napari_bloodcell.core.io.records import ImageRecord
from napari_bloodcell.core.models.registry import ModelRegistry
from napari_bloodcell.core.progress import drain
from napari_bloodcell.core.review_project import (
    Autosaver,
    ReviewProject,
    image_digest,
    image_key,
)

CLASSES = ["RBC", "WBC", "Platelets"]


def reviewed_item(tmp_path, k: int, n: int = 4) -> ExportItem:
    img = np.full((40, 60, 3), 100 + k, np.uint8)
    img[5:15, 5:15] = 20
    path = tmp_path / f"field_{k}.png"
    path.write_bytes(png_bytes(img))
    boxes = np.array([[2 + 10 * i, 3, 10 + 10 * i, 12] for i in range(n)], dtype=float)
    rec = ImageRecord(path.name, 60, 40, boxes=boxes, labels=[0] * n, scores=[0.9, 0.3, 0.8, 0.2][:n],
                      sources=["m:v1"] * n, reviews=["unreviewed"] * n)
    table = AnnotationTable.from_record(rec, CLASSES)
    table.set_class([1], "WBC", by="dr.x")
    table.set_review([2], "accepted", by="dr.x")
    table.set_review([3], "not_classed", by="dr.x")  # box kept for detection, left out of crops
    image = {"file_name": path.name, "width": 60, "height": 40, "path": str(path)}
    return ExportItem(table, image, image_digest(path), project="proj")


def test_export_writes_reviewed_boxes_only_and_versions_re_exports(tmp_path):
    ds = tmp_path / "ds"
    items = [reviewed_item(tmp_path, 0), reviewed_item(tmp_path, 1)]
    res = drain(export_dataset(items, ds, by="dr.x", views=["voc", "yolo"]))
    assert res.version == 1 and res.images == 2 and res.boxes == 6 and res.crops == 4
    assert "1 unreviewed" in res.warnings[0]
    aset = read_annotations(ds)  # the dataset folder opens like any annotation set
    rec = aset.images[0]
    assert rec.review_list() == ["corrected", "accepted", "not_classed"]
    assert [aset.classes[i] for i in rec.labels] == ["WBC", "RBC", "RBC"]
    assert rec.attribute_list()[0]["changed_by"] == "dr.x" and rec.source_list()[0] == "m:v1"
    assert (ds / "versions/v0001/voc/Annotations").is_dir() and (ds / "versions/v0001/yolo/data.yaml").is_file()
    assert sorted(p.parent.name for p in (ds / "versions/v0001/crops").rglob("*.png")) == ["RBC", "RBC", "WBC", "WBC"]
    v1 = (ds / "versions/v0001/annotations.json").read_bytes()

    again = reviewed_item(tmp_path, 0)
    again.table.delete([1], by="dr.x")
    res2 = drain(export_dataset([again], ds, by="dr.y", include_unreviewed=True))
    assert res2.version == 2 and res2.replaced == [again.digest] and res2.added == []
    assert (ds / "versions/v0001/annotations.json").read_bytes() == v1  # the old version is untouched
    manifest = read_manifest(ds)
    assert manifest["current"] == 2 and manifest["versions"][1]["by"] == "dr.y"
    assert manifest["versions"][1]["include_unreviewed"] is True
    latest = read_annotations(dataset_coco_path(ds))
    by_name = {r.extra["original_file_name"]: r for r in latest.images}
    assert by_name["field_0.png"].review_list() == ["accepted", "not_classed", "unreviewed"]
    assert len(by_name["field_1.png"]) == 3
    assert len(list((ds / "images").iterdir())) == 2  # each image stored once


def test_export_refuses_foreign_folders_and_unknown_views(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    item = reviewed_item(tmp_path, 0)
    with pytest.raises(BloodcellInputError, match="not a napari-bloodcell dataset"):
        drain(export_dataset([item], tmp_path / "mine", by="p"))
    with pytest.raises(BloodcellInputError, match="allowed: voc, yolo"):
        drain(export_dataset([item], tmp_path / "ds", by="p", views=["pascal"]))


def test_items_from_a_review_project(tmp_path):
    project = ReviewProject(tmp_path / "proj")
    item = reviewed_item(tmp_path, 0)
    key = image_key(item.image["file_name"], item.digest)
    Autosaver(project, key, item.table, {**item.image, "digest": item.digest}).save_now()
    (loaded,) = items_from_project(tmp_path / "proj")
    assert loaded.digest == item.digest and len(loaded.table) == 4
    with pytest.raises(BloodcellInputError, match="no review for"):
        items_from_project(tmp_path / "proj", keys=["other-123"])


def test_registry_versions_activation_and_rollback(tmp_path):
    reg = ModelRegistry(tmp_path / "reg")
    ckpt = tmp_path / "a.pt"
    ckpt.write_bytes(b"weights-a")
    v1 = reg.add(ckpt, "detector", metrics={"mAP50": 0.5}, activate=True, by="p")
    ckpt.write_bytes(b"weights-b")
    v2 = reg.add(ckpt, "detector", parent=v1["id"], metrics={"mAP50": 0.4}, activate=False)
    assert reg.active()["id"] == "v0001" and reg.path(v2).read_bytes() == b"weights-b"
    reg.activate("v0002")
    assert reg.active()["id"] == "v0002"
    assert reg.rollback()["id"] == "v0001" and reg.active()["id"] == "v0001"
    assert [h["active"] for h in reg.load()["history"]] == ["v0001", "v0002", "v0001"]
    assert reg.path(v1).read_bytes() == b"weights-a"
    with pytest.raises(BloodcellInputError, match="no model version 'v0009'"):
        reg.activate("v0009")
    with pytest.raises(BloodcellInputError, match="unknown model task"):
        reg.active("segmentor")
    assert json.loads((tmp_path / "reg/registry.json").read_text())["versions"][1]["parent"] == "v0001"


def test_rollback_needs_an_earlier_version(tmp_path):
    reg = ModelRegistry(tmp_path / "reg")
    with pytest.raises(BloodcellInputError, match="no earlier active detector"):
        reg.rollback()


def test_views_hold_artefacts_as_other_tools_expect(tmp_path):
    """A not-classed box is no example of its old class: VOC marks it difficult, YOLO leaves it out; YOLO labels
    are the plain five columns."""
    from napari_bloodcell.core.io.voc import read_voc

    ds = tmp_path / "ds"
    drain(export_dataset([reviewed_item(tmp_path, 0)], ds, by="dr.x", views=["voc", "yolo"]))
    version = ds / "versions" / "v0001"
    voc = read_voc(version / "voc")
    difficult = [a.get("difficult") for a in voc.images[0].attribute_list()]
    assert sorted(map(int, difficult)) == [0, 0, 1]  # WBC, RBC kept; the artefact marked difficult
    lines = next((version / "yolo" / "labels").rglob("*.txt")).read_text().splitlines()
    assert len(lines) == 2 and all(len(line.split()) == 5 for line in lines)


def test_an_image_only_in_memory_is_exported_and_a_missing_one_does_not_block_the_rest(tmp_path):
    pixels = np.zeros((40, 60), np.float32)
    pixels[10:20, 10:20] = 0.5  # a float image (made in napari): stored losslessly
    rec = ImageRecord("made.png", 60, 40, boxes=np.array([[10.0, 10, 20, 20]]), labels=[1], reviews=["accepted"])
    memory = ExportItem(AnnotationTable.from_record(rec, CLASSES), {"file_name": "made.png", "width": 60,
                        "height": 40, "path": None}, image_digest(array=pixels), pixels=pixels)
    gone = reviewed_item(tmp_path, 1)
    gone.image = dict(gone.image, path=str(tmp_path / "deleted.png"))
    res = drain(export_dataset([memory, gone, reviewed_item(tmp_path, 2)], tmp_path / "ds", by="dr.x"))
    assert res.images == 2 and any("field_1.png: left out" in w for w in res.warnings)
    from napari_bloodcell.core.io.images import read_image

    stored = read_image(next((tmp_path / "ds" / "images").glob(f"{memory.digest}.*")))
    np.testing.assert_array_equal(stored, pixels)
    with pytest.raises(BloodcellInputError, match="nothing to export"):
        drain(export_dataset([gone], tmp_path / "ds2", by="dr.x"))


def test_a_review_project_keeps_an_in_memory_image_for_later_export(tmp_path):
    project = ReviewProject(tmp_path / "project")
    pixels = np.full((30, 40, 3), 77, np.uint8)
    digest = image_digest(array=pixels)
    table = AnnotationTable.from_record(ImageRecord("x.png", 40, 30, boxes=np.array([[1.0, 1, 9, 9]]), labels=[0],
                                                    reviews=["accepted"]), CLASSES)
    project.save(image_key("x.png", digest), table, {"file_name": "x.png", "width": 40, "height": 30,
                                                     "path": None, "digest": digest})
    project.keep_pixels(digest, pixels)
    (item,) = items_from_project(project.folder)
    res = drain(export_dataset([item], tmp_path / "ds", by="dr.x"))
    assert res.images == 1 and not res.warnings
    with pytest.raises(BloodcellInputError, match="hexadecimal"):
        project.keep_pixels("../../evil", pixels)


def test_retrain_readiness_says_what_is_missing_before_training(tmp_path):
    from napari_bloodcell.core.io.dataset import retrain_readiness

    ds = tmp_path / "ds"
    assert "not a dataset yet" in retrain_readiness(ds, "detector")
    drain(export_dataset([reviewed_item(tmp_path, 0)], ds, by="dr.x"))
    assert "needs at least 2 reviewed images" in retrain_readiness(ds, "detector")
    assert "at least 3 reviewed cells" in retrain_readiness(ds, "classifier")  # 2 crops: accepted + corrected
    assert "box dataset" in retrain_readiness(ds, "segmenter")
    drain(export_dataset([reviewed_item(tmp_path, 0), reviewed_item(tmp_path, 1)], ds, by="dr.x"))
    assert retrain_readiness(ds, "detector") is None and retrain_readiness(ds, "classifier") is None


def test_a_segmentation_dataset_of_one_case_says_it_needs_two(tmp_path):
    from napari_bloodcell.core.export_volumes import export_segmentation, item_from_files
    from napari_bloodcell.core.io.dataset import retrain_readiness
    from napari_bloodcell.core.io.nifti import save_nifti

    image, labels = tmp_path / "case.nii.gz", tmp_path / "case_labels.nii.gz"
    volume = np.zeros((8, 8, 8), np.float32)
    volume[2:5, 2:5, 2:5] = 1
    save_nifti(volume, np.eye(4), image)
    save_nifti(volume.astype(np.uint8), np.eye(4), labels, is_label_map=True)
    drain(export_segmentation([item_from_files(image, labels)], tmp_path / "vols", by="dr.x"))
    reason = retrain_readiness(tmp_path / "vols", "segmenter")
    assert reason is not None and "at least 2 labelled cases" in reason and "has 1" in reason
