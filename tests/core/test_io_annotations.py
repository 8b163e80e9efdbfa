import json
import math

import numpy as np
import pytest

from napari_bloodcell.core.convert import convert_annotations
from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.io.box_csv import read_box_csv
from napari_bloodcell.core.io.coco import read_coco, write_coco
from napari_bloodcell.core.io.formats import detect_annotation_format, read_annotations
from napari_bloodcell.core.io.voc import read_voc, write_voc_xml
from napari_bloodcell.core.io.yolo import read_yolo
from napari_bloodcell.core.progress import drain

from .helpers import CLASSES, make_images, make_set


def assert_same(a, b, atol=1e-6, keep_meta=True):
    assert a.classes == b.classes
    assert [r.file_name.split("/")[-1] for r in a.images] == [r.file_name.split("/")[-1] for r in b.images]
    for ra, rb in zip(a.images, b.images):
        np.testing.assert_allclose(ra.boxes, rb.boxes, atol=atol)
        np.testing.assert_array_equal(ra.labels, rb.labels)
        if keep_meta:
            np.testing.assert_allclose(ra.score_list(), rb.score_list())
            assert ra.source_list() == rb.source_list()
            assert ra.review_list() == rb.review_list()


def test_coco_round_trip_keeps_scores_sources_reviews_attributes(tmp_path):
    aset = make_set(tmp_path)
    write_coco(aset, tmp_path / "a.json")
    back = read_coco(tmp_path / "a.json")
    assert_same(aset, back)
    assert back.images[0].attributes[1] == {"truncated": 1, "note": "smudge"}
    assert back.images[0].path == aset.images[0].path
    raw = json.loads((tmp_path / "a.json").read_text())
    assert [c["id"] for c in raw["categories"]] == [1, 2, 3]
    assert raw["annotations"][0]["bbox"] == [1, 2, 10, 20]
    assert raw["annotations"][0]["attributes"]["review"] == "unreviewed"


def test_voc_round_trip_single_file(tmp_path):
    aset = make_set(tmp_path)
    (tmp_path / "Annotations").mkdir()
    write_voc_xml(aset.images[0], CLASSES, tmp_path / "Annotations" / "img_0.xml")
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES))
    back = read_voc(tmp_path / "Annotations" / "img_0.xml")
    assert back.classes == CLASSES
    np.testing.assert_allclose(back.images[0].boxes, aset.images[0].boxes)
    assert back.images[0].review_list() == ["unreviewed", "corrected"]
    assert back.images[0].attributes[1]["note"] == "smudge"
    assert back.images[0].path == tmp_path / "img_0.png"  # found beside the XML folder's dataset root


def test_convert_through_every_format_keeps_boxes_and_classes(tmp_path):
    aset = make_set(tmp_path / "src")
    cur = aset
    for k, fmt in enumerate(["voc", "coco", "yolo", "voc", "coco"]):
        out = tmp_path / f"step{k}_{fmt}"
        drain(convert_annotations(cur, out, fmt))
        assert detect_annotation_format(out) == fmt
        nxt = read_annotations(out)
        assert_same(aset, nxt, atol=1e-3, keep_meta=False)
        assert all(r.path is not None and r.path.is_file() for r in nxt.images)
        cur = nxt
    # scores survive YOLO (sixth column); sources and reviews survive VOC and COCO
    assert math.isclose(cur.images[0].score_list()[0], 0.9, abs_tol=1e-6)


def test_convert_reference_mode_points_at_originals(tmp_path):
    aset = make_set(tmp_path / "src")
    drain(convert_annotations(aset, tmp_path / "out", "coco", images="reference"))
    assert not (tmp_path / "out" / "images").exists()
    back = read_coco(tmp_path / "out" / "annotations.json")
    assert [r.path.resolve() for r in back.images] == [r.path.resolve() for r in aset.images]
    with pytest.raises(BloodcellInputError, match="YOLO"):
        drain(convert_annotations(aset, tmp_path / "y", "yolo", images="reference"))


def test_convert_refuses_existing_output_and_leaves_nothing_on_error(tmp_path):
    aset = make_set(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(BloodcellInputError, match="refusing to overwrite"):
        drain(convert_annotations(aset, out, "coco"))
    assert (out / "keep.txt").read_text() == "mine"
    aset.images[1].path.unlink()  # the second image vanished: the copy fails half-way
    with pytest.raises(BloodcellInputError, match="not found"):
        drain(convert_annotations(read_coco_like(aset), tmp_path / "new", "voc"))
    assert not (tmp_path / "new").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".new")]


def read_coco_like(aset):
    for rec in aset.images:
        if rec.path is not None and not rec.path.exists():
            rec.path = None
    return aset


def write_yolo_dataset(root, lines, classes=("a", "b")):
    make_images(root / "images", sizes=((100, 50),))
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "img_0.txt").write_text(lines)
    (root / "classes.txt").write_text("\n".join(classes))


def test_yolo_reads_scores_polygons_and_data_yaml(tmp_path):
    write_yolo_dataset(tmp_path, "0 0.5 0.5 0.2 0.4\n1 0.25 0.25 0.1 0.1 0.75\n1 0.1 0.1 0.3 0.1 0.3 0.3\n")
    (tmp_path / "classes.txt").unlink()
    (tmp_path / "data.yaml").write_text("nc: 2\nnames: {0: a, 1: b}\n")
    aset = read_yolo(tmp_path / "labels" / "img_0.txt")
    assert aset.classes == ["a", "b"]
    rec = aset.images[0]
    np.testing.assert_allclose(rec.boxes, [[40, 15, 60, 35], [20, 10, 30, 15], [10, 5, 30, 15]])
    assert np.isnan(rec.scores[0]) and rec.scores[1] == pytest.approx(0.75)
    (tmp_path / "classes.txt").write_text("a\nb\n")
    assert detect_annotation_format(tmp_path / "classes.txt") == "yolo"  # the class list opens the whole dataset
    assert len(read_annotations(tmp_path / "classes.txt").images) == 1


def test_box_csv_normalised_coordinates(tmp_path):
    make_images(tmp_path / "images", sizes=((100, 50),))
    (tmp_path / "boxes.csv").write_text("image_id,image,xmin,ymin,xmax,ymax,label\n1,img_0.png,0.1,0.2,0.5,1.0,rbc\n")
    aset = read_box_csv(tmp_path / "boxes.csv")
    np.testing.assert_allclose(aset.images[0].boxes, [[10, 10, 50, 50]])
    assert detect_annotation_format(tmp_path / "boxes.csv") == "csv"


# ------------------------------------------------------------------------------------------ bad input


def test_malformed_voc_cases(tmp_path):
    make_images(tmp_path, sizes=((64, 48),))
    bad = {
        "broken.xml": "<annotation><object>",
        "nobox.xml": "<annotation><size><width>64</width><height>48</height></size><object><name>a</name></object></annotation>",
        "text.xml": "<annotation><size><width>64</width><height>48</height></size><object><name>a</name><bndbox>"
                    "<xmin>one</xmin><ymin>1</ymin><xmax>3</xmax><ymax>3</ymax></bndbox></object></annotation>",
        "outside.xml": "<annotation><size><width>64</width><height>48</height></size><object><name>a</name><bndbox>"
                       "<xmin>1</xmin><ymin>1</ymin><xmax>90</xmax><ymax>3</ymax></bndbox></object></annotation>",
        "swapped.xml": "<annotation><size><width>64</width><height>48</height></size><object><name>a</name><bndbox>"
                       "<xmin>30</xmin><ymin>1</ymin><xmax>10</xmax><ymax>3</ymax></bndbox></object></annotation>",
    }
    expect = {"broken.xml": "malformed XML", "nobox.xml": "no <bndbox>", "text.xml": "<xmin> is 'one'",
              "outside.xml": "outside the 64x48 image", "swapped.xml": "swapped"}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(BloodcellInputError, match=expect[name]) as info:
            read_voc(tmp_path / name)
        assert name in str(info.value)


def test_unknown_voc_class_against_class_list(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "classes.txt").write_text("RBC\n")
    (tmp_path / "Annotations" / "x.xml").write_text(
        "<annotation><size><width>64</width><height>48</height></size><object><name>WBC</name><bndbox>"
        "<xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>")
    with pytest.raises(BloodcellInputError, match="'WBC' is not in the class list"):
        read_voc(tmp_path)


def test_malformed_coco_cases(tmp_path):
    base = {"images": [{"id": 1, "file_name": "x.png", "width": 10, "height": 10}],
            "categories": [{"id": 1, "name": "a"}], "annotations": []}
    cases = {
        "badjson": ("{not json", "malformed JSON"),
        "unknown_cat": ({**base, "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 1, 2, 2]}]},
                        "category_id 5"),
        "no_bbox": ({**base, "annotations": [{"id": 1, "image_id": 1, "category_id": 1}]}, "malformed"),
        "orphan": ({**base, "annotations": [{"id": 1, "image_id": 9, "category_id": 1, "bbox": [1, 1, 2, 2]}]},
                   "image_id \\[9\\]"),
        "outside": ({**base, "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 50, 2]}]},
                    "outside"),
        "not_coco": ({"hello": 1}, "not a COCO dataset"),
    }
    for name, (content, message) in cases.items():
        p = tmp_path / f"{name}.json"
        p.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(BloodcellInputError, match=message):
            read_coco(p)


def test_yolo_bad_lines(tmp_path):
    for k, (lines, message) in enumerate([("2 0.5 0.5 0.1 0.1\n", "class id 2 is unknown"),
                                          ("0 0.5 0.5\n", "expected 5 or 6 numbers"),
                                          ("0 a b c d\n", "value 2 .*a number is required"),
                                          ("0 1.5 0.5 0.4 0.4\n", "outside")]):
        root = tmp_path / str(k)
        write_yolo_dataset(root, lines)
        with pytest.raises(BloodcellInputError, match=message) as info:
            read_yolo(root)
        assert "img_0.txt" in str(info.value)


def test_repairs_are_reported_not_silent(tmp_path):
    base = {"images": [{"id": 1, "file_name": "x.png", "width": 10, "height": 10}],
            "categories": [{"id": 1, "name": "a"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [-1, 0, 5, 5]},
                            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [3, 3, 0, 4]}]}
    p = tmp_path / "a.json"
    p.write_text(json.dumps(base))
    aset = read_coco(p)
    assert aset.images[0].boxes.tolist() == [[0, 0, 4, 5]]
    assert any("clipped 1" in w for w in aset.warnings) and any("zero area" in w for w in aset.warnings)


def test_detection_says_none_for_foreign_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "package.json").write_text('{"name": "x", "images": ["logo.png"]}')
    (tmp_path / "pom.xml").write_text("<project/>")
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    for name in ("notes.txt", "package.json", "pom.xml", "table.csv"):
        assert detect_annotation_format(tmp_path / name) is None
    assert detect_annotation_format(tmp_path) is None
    assert detect_annotation_format(tmp_path / "missing.xml") is None
    with pytest.raises(BloodcellInputError, match="not a recognised annotation set"):
        read_annotations(tmp_path / "notes.txt")
    # named explicitly, a file is parsed by its suffix so the error says what is wrong inside it
    with pytest.raises(BloodcellInputError, match="not a COCO dataset"):
        read_annotations(tmp_path / "package.json")
    with pytest.raises(BloodcellInputError, match="root element is <project>"):
        read_annotations(tmp_path / "pom.xml")
    with pytest.raises(BloodcellInputError, match="needs the columns"):
        read_annotations(tmp_path / "table.csv")
