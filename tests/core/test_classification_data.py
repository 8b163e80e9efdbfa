"""Where classifier samples come from (label CSV + boxes, annotations, crops), how they are cut and split, how a
classifier's output lands on boxes, and the classifier's one-click retraining with its registry."""

from __future__ import annotations

import numpy as np
import pytest

from napari_bloodcell.core.boxes import crop_square, pad_square
from napari_bloodcell.core.datasets.classification import (
    group_split,
    load_samples,
    samples_from_annotations,
    stratified_group_folds,
)
from napari_bloodcell.core.differential import typed_classes
from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.inference.classify import (
    classify_annotations,
    load_classifier,
    merged_classes,
)
from napari_bloodcell.core.io.formats import read_annotations
from napari_bloodcell.core.io.images import png_bytes
from napari_bloodcell.core.io.records import AnnotationSet, ImageRecord
from napari_bloodcell.core.io.voc import write_voc_xml
from napari_bloodcell.core.progress import drain
from napari_bloodcell.core.training.classification import (
    ClassifierTrainConfig,
    train_classifier,
)

from .cells import wbc_fields

TYPES = ["Neutrophil", "Eosinophil", "Lymphocyte", "Monocyte"]


def test_crop_square_centres_pads_at_edges_and_keeps_context():
    img = np.arange(100 * 80 * 3, dtype=np.uint8).reshape(100, 80, 3)
    crop = crop_square(img, [10, 20, 30, 30], margin=0.25)  # 20 x 10 box: a 30 px square
    assert crop.shape == (30, 30, 3)
    edge = crop_square(img, [0, 0, 20, 20], margin=0.5)  # reaches 10 px past the corner: border repeated
    assert edge.shape == (40, 40, 3) and np.array_equal(edge[0, 0], img[0, 0])
    assert pad_square(img[:10, :30]).shape == (30, 30, 3)


def _voc_with_wbcs(tmp_path):
    """Four images: one WBC; two WBCs of one type; two WBCs of two types; no WBC box."""
    folder = tmp_path / "voc"
    (folder / "JPEGImages").mkdir(parents=True)
    recs = []
    layout = {"a": [[5, 5, 25, 25]], "b": [[5, 5, 25, 25], [40, 40, 60, 60]], "c": [[5, 5, 25, 25], [40, 40, 60, 60]],
              "d": []}
    for stem, boxes in layout.items():
        path = folder / "JPEGImages" / f"{stem}.jpg"
        path.write_bytes(png_bytes(np.full((64, 64, 3), 200, np.uint8)))
        recs.append(ImageRecord(f"{stem}.jpg", 64, 64, np.array(boxes, float).reshape(-1, 4),
                                np.ones(len(boxes), np.int64), path=path))
    for rec in recs:
        write_voc_xml(rec, ["RBC", "WBC"], folder / "Annotations" / f"{rec.stem}.xml")
    csv = tmp_path / "labels.csv"
    csv.write_text("image,category\na.jpg,NEUTROPHIL\nb.jpg,\"LYMPHOCYTE,LYMPHOCYTE\"\n"
                   "c.jpg,\"NEUTROPHIL,MONOCYTE\"\nd.jpg,EOSINOPHIL\nmissing.jpg,NEUTROPHIL\n")
    return folder, csv


def test_label_csv_pairs_types_with_the_wbc_boxes_or_says_why_not(tmp_path):
    folder, csv = _voc_with_wbcs(tmp_path)
    sset = load_samples(csv, images=[folder / "JPEGImages"], boxes=folder, box_class="WBC")
    assert sset.classes == ["LYMPHOCYTE", "NEUTROPHIL"]
    assert sorted(s.group for s in sset.samples) == ["a", "b", "b"]  # two lymphocytes of one image
    reasons = " | ".join(sset.skipped)
    assert "c.jpg: 2 box(es) for types ['NEUTROPHIL', 'MONOCYTE']" in reasons
    assert "d.jpg: no WBC box" in reasons and "missing.jpg: image not found" in reasons
    whole = load_samples(csv, images=[folder / "JPEGImages"])
    assert all(s.box is None for s in whole.samples) and len(whole) == 4  # whole-image setting
    with pytest.raises(BloodcellInputError, match="box class 'wbc'"):
        load_samples(csv, images=[folder / "JPEGImages"], boxes=folder, box_class="wbc")


def test_multilabel_csv_with_label_columns(tmp_path):
    (tmp_path / "p.png").write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    (tmp_path / "q.png").write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    csv = tmp_path / "flags.csv"
    csv.write_text("image,oval,sickle,echinocyte\np.png,1,0,1\nq.png,0,0,0\n")
    sset = load_samples(csv, multilabel=True)
    assert sset.multilabel and sset.classes == ["oval", "sickle", "echinocyte"]
    np.testing.assert_array_equal(sset.targets(), [[1, 0, 1], [0, 0, 0]])


def test_splits_never_separate_cells_of_one_image(tmp_path):
    coco = wbc_fields(tmp_path / "fields", n=10)
    sset = samples_from_annotations(read_annotations(coco), TYPES)
    assert len(sset) >= 30 and sset.classes == TYPES
    train, val = group_split(sset, 0.3)
    groups = sset.groups()
    assert not set(groups[train]) & set(groups[val]) and len(val)
    for tr, te in stratified_group_folds(sset, 3):
        assert not set(groups[tr]) & set(groups[te])
    with pytest.raises(BloodcellInputError, match="fewer than 20 folds"):
        stratified_group_folds(sset, 20)
    dropped = sset.without(["Monocyte"])
    assert dropped.classes == TYPES[:3] and "class Monocyte left out" in dropped.skipped[-1]


@pytest.fixture(scope="module")
def wbc_model(tmp_path_factory):
    """A small classifier of the four synthetic white-cell types (GoogLeNet, 64 px, a few epochs)."""
    folder = tmp_path_factory.mktemp("wbc")
    coco = wbc_fields(folder / "fields", n=8)
    out = folder / "wbc.pt"
    cfg = ClassifierTrainConfig(arch="googlenet", data=coco, classes=TYPES, out=out, epochs=3, batch=8,
                                input_size=64, optimizer="adam", lr=1e-3, box_class="WBC")
    drain(train_classifier(cfg))
    return out, coco


def test_classified_boxes_get_types_probabilities_and_margins(wbc_model, tmp_path):
    out, coco = wbc_model
    assert merged_classes(["RBC", "WBC", "Platelets"], TYPES, "WBC") == ["RBC", "Platelets", *TYPES, "WBC"]
    truth = read_annotations(coco)
    supers = {c: ("WBC" if c in TYPES else c) for c in truth.classes}
    detector_classes = ["RBC", "WBC", "Platelets"]
    records = [ImageRecord(r.file_name, r.width, r.height, r.boxes,
                           [detector_classes.index(supers[truth.classes[k]]) for k in r.labels], path=r.path)
               for r in truth.images[:2]]
    boxes = AnnotationSet(detector_classes, records)
    pred = load_classifier(out, "cpu")
    assert pred.target_class == "WBC"
    typed = drain(classify_annotations(pred, boxes, "WBC"))
    assert typed.classes == ["RBC", "Platelets", *TYPES, "WBC"]
    for before, after in zip(records, typed.images):
        for k in range(len(before)):
            attrs = after.attribute_list()[k]
            if detector_classes[before.labels[k]] == "WBC":
                assert typed.classes[after.labels[k]] in TYPES
                assert set(attrs["class_probabilities"]) == set(TYPES) and 0 <= attrs["margin"] <= 1
            else:
                assert typed.classes[after.labels[k]] == detector_classes[before.labels[k]]
                assert "margin" not in attrs
    attrs = [a for r in typed.images for a in r.attribute_list()]
    assert typed_classes(typed.classes, attrs) == TYPES
    with pytest.raises(BloodcellInputError, match="not in the boxes' classes"):
        drain(classify_annotations(pred, boxes, "Lymphocyte"))


def test_retraining_the_classifier_registers_compares_and_rolls_back(wbc_model, tmp_path):
    from napari_bloodcell.core.annotations import AnnotationTable
    from napari_bloodcell.core.export import ExportItem, export_dataset
    from napari_bloodcell.core.models.registry import ModelRegistry
    from napari_bloodcell.core.review_project import image_digest
    from napari_bloodcell.core.training.retrain import RetrainConfig
    from napari_bloodcell.core.training.retrain_classifier import retrain_classifier

    _, coco = wbc_model
    truth = read_annotations(coco)
    items = [ExportItem(AnnotationTable.from_record(rec, truth.classes),
                        {"file_name": rec.file_name, "width": rec.width, "height": rec.height, "path": str(rec.path)},
                        image_digest(rec.path)) for rec in truth.images]
    drain(export_dataset(items, tmp_path / "ds", by="dr.t", crops=False))
    registry = tmp_path / "reg"
    cfg = RetrainConfig(dataset=tmp_path / "ds", registry=registry, task="classifier", arch="googlenet",
                        classes=TYPES, epochs=2, batch=8, lr=1e-3, device="cpu", val_fraction=0.3, by="dr.t")
    first = drain(retrain_classifier(cfg))
    assert first.activated and first.parent is None and first.version["task"] == "classifier"
    assert set(first.metrics) >= {"accuracy", "macro_f1", "kappa"}
    events = []
    second = drain(retrain_classifier(cfg), events.append)
    assert second.parent == first.version["id"] and second.parent_metrics is not None
    assert any(e.kind == "compare" for e in events)
    assert "macro F1" in second.reason
    reg = ModelRegistry(registry)
    assert reg.active("detector") is None  # the detector's line is untouched
    if second.activated:
        assert reg.rollback("classifier")["id"] == first.version["id"]
    assert load_classifier(reg.active_file("classifier")[1]).classes == TYPES
