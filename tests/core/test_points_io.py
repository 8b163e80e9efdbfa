"""Point annotations: x y type text, x,y,class CSV and COCO keypoints, read, written and refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.io.points import (
    CHULA_TYPES,
    PointRecord,
    PointSet,
    points_format,
    read_points,
    write_points,
)


@pytest.fixture
def chula_like(tmp_path):
    """The Chula-RBC-12 layout: Dataset/<id>.jpg + Label/<id>.txt."""
    import imageio.v3 as iio

    (tmp_path / "Dataset").mkdir()
    (tmp_path / "Label").mkdir()
    for stem, lines in {"1": "10 12 0\n30.5 20 3\n", "2": "5 5 12\n\n44 35 3\n"}.items():
        iio.imwrite(tmp_path / "Dataset" / f"{stem}.jpg", np.full((40, 50, 3), 200, np.uint8))
        (tmp_path / "Label" / f"{stem}.txt").write_text(lines)
    return tmp_path


def test_reads_the_chula_layout(chula_like):
    pset = read_points(chula_like)
    assert points_format(chula_like) == "xyt" and pset.format == "xyt"
    assert pset.classes == list(CHULA_TYPES)  # the whole vocabulary: class indices do not depend on a subset
    one = pset.by_stem()["1"]
    assert (one.width, one.height) == (50, 40) and one.path.name == "1.jpg"
    np.testing.assert_allclose(one.points, [[10, 12], [30.5, 20]])
    assert [pset.classes[k] for k in one.labels] == ["normal", "spherocyte"]
    assert {k: v for k, v in pset.class_counts().items() if v} == {"normal": 1, "spherocyte": 2, "elliptocyte": 1}
    assert read_points(chula_like / "Label" / "2.txt").n_points == 2


@pytest.mark.parametrize("suffix", [".csv", ".json", ""])
def test_round_trip_through_every_layout(chula_like, tmp_path, suffix):
    pset = read_points(chula_like)
    out = tmp_path / f"out{suffix}"
    write_points(pset, out)
    if suffix == ".json":
        assert json.loads(out.read_text())["annotations"][0]["keypoints"][2] == 2
    back = read_points(out, images=chula_like / "Dataset")
    if suffix != ".csv":  # a CSV names only the classes it uses
        assert back.classes == pset.classes
    for a, b in zip(pset.images, back.images, strict=True):
        assert a.stem == b.stem and (a.width, a.height) == (b.width, b.height)
        np.testing.assert_allclose(a.points, b.points, atol=0.01)
        assert [pset.classes[k] for k in a.labels] == [back.classes[k] for k in b.labels]
    with pytest.raises(BloodcellInputError, match="exists"):
        write_points(pset, out)  # a user's file is never written over


@pytest.mark.parametrize("text, problem", [
    ("10 nan 0\n", "finite"), ("10 12\n", "3"), ("10 12 1.5\n", "whole"), ("999 12 0\n", "outside"),
    ("10 12 -1\n", "allowed"), ("1e400 1 0\n", "finite"),
])
def test_hostile_point_files_are_one_error(chula_like, text, problem):
    (chula_like / "Label" / "1.txt").write_text(text)
    with pytest.raises(BloodcellInputError, match=problem) as info:
        read_points(chula_like)
    assert "1.txt" in str(info.value)


def test_too_many_points_are_refused(chula_like):
    (chula_like / "Label" / "1.txt").write_text("1 1 0\n" * 100_001)
    with pytest.raises(BloodcellInputError, match="more than"):
        read_points(chula_like)


def test_csv_and_coco_name_classes_and_check_references(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("x,y,class\n1,2,target cell\n3,4,<b>x</b>\n")
    pset = read_points(csv)
    assert pset.classes == ["target cell", "<b>x</b>"] and pset.images[0].file_name == "p"
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
            "categories": [{"id": 1, "name": "normal"}],
            "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "keypoints": [1, 1, 2]}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    with pytest.raises(BloodcellInputError, match="not listed"):
        read_points(tmp_path / "c.json")
    coco["annotations"][0].update(image_id=1, keypoints=[1, 1, 0, 4, 5, 2])  # v = 0: not labelled
    (tmp_path / "c.json").write_text(json.dumps(coco))
    np.testing.assert_allclose(read_points(tmp_path / "c.json").images[0].points, [[4, 5]])
    with pytest.raises(BloodcellInputError, match="not a point annotation"):
        read_points(tmp_path / "nothing.xml") if (tmp_path / "nothing.xml").write_text("<a/>") else None


def test_writing_names_files_from_untrusted_names_inside_the_folder(tmp_path):
    pset = PointSet(["normal"], [PointRecord("../../evil.jpg", 10, 10, [[1, 1]], [0])])
    written = write_points(pset, tmp_path / "out")
    assert all(tmp_path / "out" in p.parents for p in written)


def test_points_become_cells_paired_or_grown(tmp_path):
    """Points inside detected boxes take the box; the others are grown from the cell's outline."""
    import imageio.v3 as iio
    from skimage.draw import disk

    from napari_bloodcell.core.io.records import AnnotationSet, ImageRecord
    from napari_bloodcell.core.point_boxes import cells_from_point_set

    img = np.full((80, 120, 3), 230, np.uint8)
    for cy, cx in ((20, 20), (40, 60), (60, 100)):
        img[disk((cy, cx), 9)] = (200, 90, 100)
    iio.imwrite(tmp_path / "f.png", img)
    pset = PointSet(["normal", "spherocyte"], [PointRecord("f.png", 120, 80, [[20, 20], [60, 40], [100, 60]], [0, 1, 0],
                                                           tmp_path / "f.png")])
    detected = AnnotationSet(["RBC", "WBC"], [ImageRecord("f.png", 120, 80, [[10, 10, 30, 30], [50, 30, 70, 50],
                                                                             [0, 60, 8, 70]], [0, 1, 0])])
    aset, report = cells_from_point_set(pset, detected, box_class="RBC")
    rec = aset.images[0]
    np.testing.assert_allclose(rec.boxes[0], [10, 10, 30, 30])  # paired with the RBC box holding it
    assert report["paired"] == 1 and report["grown"] + report["fallback"] == 2 and report["unpaired_boxes"] == 1
    np.testing.assert_allclose(rec.boxes[1], [51, 31, 70, 50], atol=2.5)  # the WBC box is not a candidate: grown
    assert [a["box_from"] for a in rec.attributes] == ["paired", "grown", "grown"]
    with pytest.raises(BloodcellInputError, match="box class"):
        cells_from_point_set(pset, detected, box_class="Platelets")
