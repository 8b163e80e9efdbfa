"""One crop for export, training and inference: an exported crop is, pixel for pixel and at the same size, the
crop the classifier is shown at inference and the crop it learns from."""

from __future__ import annotations

import csv
import json
import types

import numpy as np
import pytest
import tifffile

from napari_bloodcell.core.annotations import AnnotationTable
from napari_bloodcell.core.crops import CROP_CONTEXT, cell_crop, cell_crops
from napari_bloodcell.core.datasets.classification import CropDataset, load_samples
from napari_bloodcell.core.export import ExportItem, export_dataset
from napari_bloodcell.core.inference import classify
from napari_bloodcell.core.io.dataset import read_manifest
from napari_bloodcell.core.io.images import png_bytes, read_image
from napari_bloodcell.core.io.records import ImageRecord
from napari_bloodcell.core.progress import drain
from napari_bloodcell.core.review_project import image_digest

CLASSES = ["RBC", "WBC"]
BOXES = np.array([[10, 12, 34, 28],      # wide: the square is set by its 24 px width
                  [50, 30, 58, 60],      # tall and thin
                  [0, 0, 14, 10],        # at the corner: the square leaves the field, border pixels repeat
                  [61.5, 44.2, 79.9, 59.7]], dtype=float)  # fractional, touching the right edge


def _field(kind: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    if kind == "uint8 rgb":
        return rng.integers(0, 256, (64, 80, 3)).astype(np.uint8)
    if kind == "12-bit rgb":  # a camera's 12 bits in a 16-bit file: scaled by the field's maximum, not 65535
        return rng.integers(0, 4096, (64, 80, 3)).astype(np.uint16)
    return (rng.random((64, 80)) * 900 - 100).astype(np.float32)  # float grey, outside 0..1 and 0..255


def _exported(tmp_path, field: np.ndarray, dataset=None):
    """Export the field with every box accepted; returns (dataset version folder, crops in box order, item)."""
    path = tmp_path / ("field.png" if field.dtype == np.uint8 else "field.tif")
    if field.dtype == np.uint8:
        path.write_bytes(png_bytes(field))
    else:
        tifffile.imwrite(path, field)
    n = len(BOXES)
    rec = ImageRecord(path.name, field.shape[1], field.shape[0], boxes=BOXES, labels=[0, 1, 0, 1],
                      scores=[0.9] * n, sources=["m:v1"] * n, reviews=["unreviewed"] * n)
    table = AnnotationTable.from_record(rec, CLASSES)
    table.set_review(table.col("id").tolist(), "accepted", by="dr.x")
    item = ExportItem(table, {"file_name": path.name, "width": field.shape[1], "height": field.shape[0],
                              "path": str(path)}, image_digest(path), project="proj")
    dataset = dataset or tmp_path / "ds"
    result = drain(export_dataset([item], dataset, by="dr.x"))
    version = dataset / "versions" / f"v{result.version:04d}"
    with open(version / "crops" / "crops.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["image_digest"] == item.digest]
    ids = table.col("id").tolist()
    rows.sort(key=lambda r: ids.index(int(r["object_id"])))
    return version, [read_image(version / "crops" / r["crop"]) for r in rows], path


def _classified(image: np.ndarray, monkeypatch) -> list[np.ndarray]:
    """The crops classification hands to the network (before resizing), for every box of the field."""
    seen: list[np.ndarray] = []

    def capture(pred, crops):
        seen.extend(crops)
        return None
        yield  # a generator, like the real one

    monkeypatch.setattr(classify, "classify_crops", capture)
    drain(classify.classify_boxes(types.SimpleNamespace(context=classify.DEFAULT_CONTEXT), image, BOXES))
    return seen


@pytest.mark.parametrize("kind", ["uint8 rgb", "12-bit rgb", "float grey"])
def test_an_exported_crop_is_the_crop_inference_classifies(tmp_path, monkeypatch, kind):
    field = _field(kind)
    version, exported, path = _exported(tmp_path, field)
    inferred = _classified(read_image(path), monkeypatch)
    assert len(exported) == len(inferred) == len(BOXES)
    for box, out, seen in zip(BOXES, exported, inferred):
        side = int(np.ceil(max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * CROP_CONTEXT)))
        assert seen.dtype == np.uint8 and seen.shape == (side, side, 3)  # square, 15% context, before resizing
        np.testing.assert_array_equal(out, seen)  # same size, same pixels
    entry = read_manifest(tmp_path / "ds")["versions"][-1]
    assert entry["crop_margin"] == CROP_CONTEXT and entry["crop_shape"] == "square"


def test_training_learns_from_the_crops_inference_classifies(tmp_path, monkeypatch):
    field = _field("12-bit rgb")
    version, exported, path = _exported(tmp_path, field)
    inferred = _classified(read_image(path), monkeypatch)
    from_boxes = CropDataset(load_samples(tmp_path / "ds"), size=224)  # the dataset's boxes, cut in training
    order = sorted(range(len(from_boxes)), key=lambda i: from_boxes.sset.samples[i].ref["index"])
    for i, seen in zip(order, inferred, strict=True):
        np.testing.assert_array_equal(from_boxes.crop(i), seen)
    from_folder = CropDataset(load_samples(version / "crops"), size=224)  # the export's crops folder
    assert sorted(from_folder.crop(i).tobytes() for i in range(len(from_folder))) == \
        sorted(c.tobytes() for c in inferred)  # taken whole: already square, nothing padded or cut again


def test_a_crop_scales_by_the_whole_field_not_by_itself():
    field = np.zeros((40, 40), np.uint16)
    field[:, 20:] = 4000  # the bright half sets the field's range
    field[5:15, 5:15] = 1000
    crop = cell_crop(field, [5, 5, 15, 15])
    assert crop[6, 6, 0] == round(1000 * 255 / 4000)  # a crop scaled by its own maximum would be white
    np.testing.assert_array_equal(cell_crops(field, [[5, 5, 15, 15]])[0], crop)


@pytest.mark.parametrize("old_version", [False, True])
def test_crops_of_unchanged_images_are_linked_only_when_cut_the_same_way(tmp_path, old_version):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    version, exported, _ = _exported(tmp_path / "a", _field("uint8 rgb"))
    dataset = tmp_path / "a" / "ds"
    first = sorted((version / "crops").rglob("*.png"))
    if old_version:  # a version written before crops were square: 10% margin, no crop_shape, other pixels
        manifest = read_manifest(dataset)
        manifest["versions"][-1].pop("crop_shape")
        manifest["versions"][-1]["crop_margin"] = 0.1
        (dataset / "dataset.json").write_text(json.dumps(manifest))
        for crop in first:
            crop.write_bytes(png_bytes(np.zeros((5, 9, 3), np.uint8)))
    _exported(tmp_path / "b", _field("uint8 rgb")[::-1].copy(), dataset=dataset)  # another image, a new version
    second = read_manifest(dataset)["versions"][-1]["path"]
    for crop in first:
        again = dataset / second / crop.relative_to(version)
        assert again.samefile(crop) is not old_version  # hard link only to crops cut the same way
        assert read_image(again).shape[0] == read_image(again).shape[1]
    assert sorted(read_image(dataset / second / c.relative_to(version)).tobytes() for c in first) == \
        sorted(c.tobytes() for c in exported)
