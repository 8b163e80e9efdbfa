"""Every file of the real datasets in ../shared/data reads without error, and format round trips keep every box.

Skipped when ../shared/data is absent (a user's fresh checkout).
"""

from pathlib import Path

import numpy as np
import pytest

from napari_bloodcell.core.convert import convert_annotations
from napari_bloodcell.core.io.box_csv import read_box_csv
from napari_bloodcell.core.io.formats import read_annotations
from napari_bloodcell.core.io.nifti import load_nifti
from napari_bloodcell.core.io.voc import read_voc
from napari_bloodcell.core.io.yolo import read_yolo
from napari_bloodcell.core.progress import drain


def test_every_bccd_voc_file_reads(shared_data):
    aset = read_voc(shared_data / "bccd")
    assert len(aset.images) == len(list((shared_data / "bccd" / "Annotations").glob("*.xml"))) == 279
    assert aset.classes == ["Platelets", "RBC", "WBC"]
    assert all(r.path is not None for r in aset.images)  # <path> points at /home/pi; JPEGImages/ is used instead
    counts = aset.class_counts()
    assert counts == {"Platelets": 262, "RBC": 3192, "WBC": 274}
    assert all((r.width, r.height) == (640, 480) for r in aset.images)


def test_bccd_voc_coco_yolo_voc_keeps_every_box_and_class(shared_data, tmp_path):
    src = read_voc(shared_data / "bccd")
    drain(convert_annotations(src, tmp_path / "coco", "coco", images="reference"))
    coco = read_annotations(tmp_path / "coco" / "annotations.json")
    drain(convert_annotations(coco, tmp_path / "yolo", "yolo"))
    yolo = read_yolo(tmp_path / "yolo")
    drain(convert_annotations(yolo, tmp_path / "voc", "voc", images="reference"))
    back = read_voc(tmp_path / "voc")
    assert back.classes == src.classes
    assert [r.file_name for r in back.images] == [r.file_name for r in src.images]
    worst = 0.0
    for a, b in zip(src.images, back.images):
        np.testing.assert_array_equal(a.labels, b.labels)
        worst = max(worst, float(np.abs(a.boxes - b.boxes).max()) if len(a) else 0.0)
    assert worst <= 1.0
    assert worst == 0.0  # integer VOC corners survive exactly


def test_every_txl_yolo_file_reads(shared_data):
    aset = read_yolo(shared_data / "txl_pbc" / "data.yaml")
    n_labels = len(list((shared_data / "txl_pbc" / "labels").glob("*.txt")))
    assert len(aset.images) == n_labels == 1144
    assert aset.classes == ["WBC", "RBC", "Platelets"]
    assert aset.n_boxes > 10_000
    sizes = {(r.width, r.height) for r in aset.images}
    assert {(640, 480), (360, 363), (575, 575)} <= sizes


def test_bcd_csv_reads_with_normalised_coordinates(shared_data):
    aset = read_box_csv(shared_data / "bcd_aslan" / "annotations.csv")
    assert aset.classes == ["rbc", "wbc"] and aset.class_counts() == {"rbc": 303, "wbc": 11}
    assert len(aset.images) == 13 and all((r.width, r.height) == (256, 256) for r in aset.images)
    # pixel boxes agree with the KITTI labels the dataset also ships
    rec = next(r for r in aset.images if r.file_name == "image-1.png")
    kitti = Path(shared_data / "bcd_aslan" / "labels" / "image-1.txt").read_text().split()
    assert any(np.allclose(b, [float(v) for v in kitti[4:8]], atol=0.01) for b in rec.boxes)


def test_every_msd_nifti_pair_reads_and_aligns(shared_data):
    root = shared_data / "msd_hippocampus"
    images = sorted((root / "imagesTr").glob("*.nii.gz"))
    assert len(images) == 207
    for image_path in images:
        image = load_nifti(image_path)
        labels = load_nifti(root / "labelsTr" / image_path.name)
        assert not image.is_label_map and labels.is_label_map, image_path.name
        assert image.data.shape == labels.data.shape
        np.testing.assert_allclose(image.affine, labels.affine)
        assert set(np.unique(labels.data)) <= {0, 1, 2}


@pytest.mark.parametrize("name", ["BloodImage_00000.xml", "BloodImage_00338.xml"])
def test_single_bccd_file_finds_its_image(shared_data, name):
    aset = read_annotations(shared_data / "bccd" / "Annotations" / name)
    assert aset.images[0].path == shared_data / "bccd" / "JPEGImages" / name.replace(".xml", ".jpg")


def test_classical_detector_finds_bccd_white_cells(shared_data):
    """A guard on the documented benchmark (docs/benchmarks.md: WBC AP50 0.86 on all 279 images), on 12 images."""
    from napari_bloodcell.core.inference.detect import ClassicalPredictor, detect_files
    from napari_bloodcell.core.io.records import AnnotationSet
    from napari_bloodcell.core.metrics import detection_report

    gt = read_voc(shared_data / "bccd")
    some = AnnotationSet(gt.classes, gt.images[::23])
    pred = drain(detect_files(ClassicalPredictor(), [r.path for r in some.images], score=0.05))
    report = detection_report(some, pred)
    assert report["per_class"]["WBC"]["AP50"] > 0.7, report["per_class"]
    assert report["mAP50"] > 0.25, report["per_class"]


def test_wbc_types_pair_with_bccd_white_cell_boxes(shared_data):
    """The WBC-type labels become 272 cells; the ten images that cannot be paired are named with the reason."""
    from napari_bloodcell.core.datasets.classification import load_samples

    sset = load_samples(shared_data / "wbc_types" / "labels.csv", images=[shared_data / "bccd" / "JPEGImages"],
                        boxes=shared_data / "bccd", box_class="WBC")
    assert len(sset) == 272 and len(sset.skipped) == 10
    assert sum("no WBC box" in s for s in sset.skipped) == 6
    assert any(s.startswith("BloodImage_00113.jpg: 2 box(es)") for s in sset.skipped)
    four = sset.without(min_count=10)
    assert four.counts() == {"EOSINOPHIL": 73, "LYMPHOCYTE": 27, "MONOCYTE": 16, "NEUTROPHIL": 154}


def test_msd_hippocampus_cases_pair_and_split_without_separating_left_and_right(shared_data):
    from napari_bloodcell.core.datasets.volumes import case_group, find_cases, label_names_for, load_case, split_cases

    folder = shared_data / "msd_hippocampus"
    cases = find_cases(folder)
    assert len(cases) == 207 and all(c.label is not None for c in cases)
    assert label_names_for(folder)[1].startswith("Anterior") and label_names_for(folder)[2].startswith("Posterior")
    train, val = split_cases(cases, 0.2, pair_cases=True)
    assert 0.1 < len(val) / len(cases) < 0.3
    assert not {case_group(c.name, True) for c in train} & {case_group(c.name, True) for c in val}
    image, labels, vol = load_case(cases[0])  # z-scored whatever the file's range (uint8 up to 1.7 million)
    assert abs(float(image.mean())) < 1e-3 and abs(float(image.std()) - 1) < 1e-3
    assert set(np.unique(labels)) == {0, 1, 2} and vol.spacing == (1.0, 1.0, 1.0)
