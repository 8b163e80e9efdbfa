"""The plugin inside napari: samples, readers and writers through the npe2 manifest (runs under Xvfb)."""

import json

import numpy as np
import pytest

from napari_bloodcell.core.io.coco import read_coco
from napari_bloodcell.core.io.nifti import load_nifti
from napari_bloodcell.core.io.voc import read_voc
from napari_bloodcell.gui._reader import get_reader
from napari_bloodcell.gui._writer import LayerNotWritten
from napari_bloodcell.gui.layers import set_box_class

PLUGIN = "napari-bloodcell"


def layer_types(viewer):
    return [type(layer).__name__ for layer in viewer.layers]


def test_smear_sample_opens_with_coloured_labelled_boxes(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "smear")
    assert layer_types(viewer) == ["Image", "Shapes"]
    image, shapes = viewer.layers
    assert image.rgb and image.data.shape == (480, 640, 3)
    f = shapes.features
    assert {"class", "score", "source", "review", "attributes"} <= set(f.columns)
    assert set(f["class"]) == {"RBC", "Neutrophil", "Eosinophil", "Lymphocyte", "Monocyte", "Platelets"}
    assert set(f["source"]) == {"synthetic"} and set(f["review"]) == {"accepted"}
    # one colour per class, the same for every box of that class, and the class name as text
    colours = {}
    for cls, colour in zip(f["class"], shapes.edge_color):
        colours.setdefault(cls, tuple(np.round(colour, 3)))
        assert colours[cls] == tuple(np.round(colour, 3))
    assert len(set(colours.values())) == len(colours)
    assert colours["RBC"] == (1.0, 0.549, 0.0, 1.0)  # '#ff8c00'
    assert shapes.text.string.format == "{class}"
    assert list(shapes.text.values[:3]) == list(f["class"][:3])


def test_mri_sample_aligns_image_and_labels(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "mri")
    assert layer_types(viewer) == ["Image", "Labels"]
    image, labels = viewer.layers
    np.testing.assert_allclose(image.scale, labels.scale)
    np.testing.assert_allclose(image.translate, labels.translate)
    np.testing.assert_allclose(image.scale, (2.4, 2.2, 2.6), atol=1e-6)
    assert set(np.unique(labels.data)) == {0, 1, 2}
    assert labels.metadata["label_names"]["1"] == "left hippocampus"
    assert list(labels.features["name"]) == ["background", "left hippocampus", "right hippocampus"]
    # the anatomical direction of each voxel axis, on the sliders and the axes arrows
    assert image.axis_labels == labels.axis_labels == ("L→R", "P→A", "I→S")
    assert viewer.dims.axis_labels == ("L→R", "P→A", "I→S")
    assert str(image.units[0]) == "millimeter"
    viewer.layers.remove(image)
    viewer.open_sample(PLUGIN, "smear")  # a smear has no anatomy
    assert viewer.layers[-1].axis_labels == ("-2", "-1") and viewer.dims.axis_labels == ("L→R", "P→A", "I→S")
    viewer.layers.remove(labels)  # the volume's labels leave with the last volume
    assert viewer.dims.axis_labels == ("-2", "-1")


def test_label_names_and_colours_from_the_dataset_show_on_hover(make_napari_viewer, tmp_path):
    from napari_bloodcell.core.io.nifti import save_nifti

    data = np.zeros((4, 5, 6), np.uint8)
    data[1], data[2] = 1, 2
    save_nifti(data, np.diag([1.0, 1.0, 1.0, 1.0]), tmp_path / "labelsTr" / "case_1.nii.gz", is_label_map=True)
    (tmp_path / "LABELS.txt").write_text('0 0 0 0 0 0 0 "Clear Label"\n1 255 0 0 1 1 1 "Anterior"\n'
                                         '2 0 0 255 1 1 1 "Posterior"\n')
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "labelsTr" / "case_1.nii.gz"), plugin=PLUGIN)
    labels = viewer.layers[0]
    assert labels.metadata["label_names"] == {"0": "Clear Label", "1": "Anterior", "2": "Posterior"}
    for plane, name in ((1, "Anterior"), (2, "Posterior")):
        viewer.dims.set_point(0, plane)  # the status reads the slice on show
        assert f"name: {name}" in labels.get_status((plane, 0, 0))["coordinates"]
    np.testing.assert_allclose(labels.colormap.map(np.array([0, 1, 2])),
                               [[0, 0, 0, 0], [1, 0, 0, 1], [0, 0, 1, 1]])


def test_smear_layers_are_in_pixels_so_drawn_layers_agree(make_napari_viewer):
    from napari.utils.notifications import notification_manager

    said: list[str] = []
    listen = lambda n: said.append(str(n.message))  # noqa: E731
    notification_manager.notification_ready.connect(listen)
    try:
        viewer = make_napari_viewer()
        viewer.open_sample(PLUGIN, "smear")
        viewer.add_shapes(np.array([[[1.0, 1.0], [1.0, 9.0], [9.0, 9.0], [9.0, 1.0]]]), shape_type="rectangle")
        viewer.add_points(np.array([[5.0, 5.0]]))
        viewer.window._qt_viewer.canvas.on_draw(None)  # napari compares units when it draws
    finally:
        notification_manager.notification_ready.disconnect(listen)
    assert {str(u) for layer in viewer.layers for u in layer.units} == {"pixel"}
    assert not [m for m in said if "units" in m.lower()]  # "Inconsistent units across layers"


@pytest.mark.parametrize("relative", ["smear/Annotations/smear_0000.xml", "smear/annotations.json", "smear"])
def test_open_annotations_through_the_manifest(make_napari_viewer, sample_data, relative):
    viewer = make_napari_viewer()
    viewer.open(str(sample_data / relative), plugin=PLUGIN)
    expected = read_voc(sample_data / "smear")
    shapes = viewer.layers[-1]
    assert layer_types(viewer) == ["Image", "Shapes"]
    if relative.endswith(".xml"):
        assert shapes.ndim == 2 and len(shapes.data) == len(expected.images[0])
    else:  # two images: a lazy stack and 3D rectangles, one plane per image
        assert viewer.layers[0].data.shape == (2, 480, 640, 3)
        assert shapes.ndim == 3 and len(shapes.data) == expected.n_boxes
        np.testing.assert_array_equal(np.asarray(viewer.layers[0].data[1]),
                                      np.asarray(viewer.layers[0].data[1]))
    assert set(shapes.features["class"]) <= set(expected.classes)


def test_open_yolo_and_nifti_through_the_manifest(make_napari_viewer, sample_data, tmp_path):
    from napari_bloodcell.core.convert import convert_annotations
    from napari_bloodcell.core.progress import drain

    drain(convert_annotations(read_voc(sample_data / "smear"), tmp_path / "yolo", "yolo"))
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "yolo" / "labels" / "smear_0001.txt"), plugin=PLUGIN)
    assert layer_types(viewer) == ["Image", "Shapes"]
    assert len(viewer.layers[1].data) == len(read_voc(sample_data / "smear").images[1])
    viewer.layers.clear()
    viewer.open(str(sample_data / "mri" / "synthetic_t1_000.nii.gz"), plugin=PLUGIN)
    viewer.open(str(sample_data / "mri" / "synthetic_t1_000_labels.nii.gz"), plugin=PLUGIN)
    assert layer_types(viewer) == ["Image", "Labels"]
    vol = load_nifti(sample_data / "mri" / "synthetic_t1_000.nii.gz")
    for layer in viewer.layers:
        np.testing.assert_allclose(layer.scale, vol.spacing, rtol=1e-6)
        np.testing.assert_allclose(layer.translate, vol.affine[:3, 3], rtol=1e-6)
        np.testing.assert_allclose(np.asarray(layer.metadata["affine"]), vol.affine)


def test_shapes_save_to_coco_voc_yolo_and_reload(make_napari_viewer, sample_data, tmp_path):
    viewer = make_napari_viewer()
    viewer.open(str(sample_data / "smear" / "Annotations" / "smear_0000.xml"), plugin=PLUGIN)
    shapes = viewer.layers[-1]
    # a reviewer changes one class and draws a new box
    set_box_class(shapes, [0], "Monocyte")
    assert tuple(np.round(shapes.edge_color[0], 3)) == (0.541, 0.169, 0.886, 1.0)  # monocyte violet '#8a2be2'
    assert shapes.text.values[0] == "Monocyte"
    shapes.add_rectangles(np.array([[10.0, 20.0], [40.0, 60.0]]))
    assert shapes.features["source"].iloc[-1] == "person" and shapes.features["review"].iloc[-1] == "corrected"
    n = len(shapes.data)
    for suffix in (".json", ".xml", ".txt"):
        shapes.save(str(tmp_path / f"boxes{suffix}"), plugin=PLUGIN)
    coco = read_coco(tmp_path / "boxes.json")
    rec = coco.images[0]
    assert len(rec) == n and coco.classes[rec.labels[0]] == "Monocyte"
    np.testing.assert_allclose(rec.boxes[-1], [20, 10, 60, 40])
    assert rec.reviews[-1] == "corrected" and rec.sources[-1] == "person"
    xml = (tmp_path / "boxes.xml").read_text()
    assert xml.count("<object>") == n and "<name>Monocyte</name>" in xml
    lines = (tmp_path / "boxes.txt").read_text().splitlines()
    assert len(lines) == n and (tmp_path / "classes.txt").read_text().splitlines()[4] == "Monocyte"
    # saving again keeps the earlier file as a backup
    shapes.save(str(tmp_path / "boxes.json"), plugin=PLUGIN)
    assert len(list(tmp_path.glob("boxes.json.*.bak"))) == 1


def test_labels_save_as_nifti_with_the_source_affine_and_png(make_napari_viewer, sample_data, tmp_path):
    viewer = make_napari_viewer()
    viewer.open(str(sample_data / "mri" / "synthetic_t1_000_labels.nii.gz"), plugin=PLUGIN)
    labels = viewer.layers[0]
    labels.data[10:12, 10:12, 10:12] = 2  # a correction
    labels.save(str(tmp_path / "corrected.nii.gz"), plugin=PLUGIN)
    src, out = load_nifti(sample_data / "mri" / "synthetic_t1_000_labels.nii.gz"), load_nifti(tmp_path / "corrected.nii.gz")
    np.testing.assert_allclose(out.affine, src.affine)  # the rotation survives, not just scale/translate
    assert out.is_label_map and out.data[11, 11, 11] == 2
    viewer.layers.clear()
    mask = viewer.add_labels(np.zeros((20, 30), np.uint8))
    mask.data[5:10, 5:10] = 3
    mask.save(str(tmp_path / "mask.png"), plugin=PLUGIN)
    from napari_bloodcell.core.io.images import read_image

    assert read_image(tmp_path / "mask.png")[7, 7] == 3


def test_get_reader_declines_foreign_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "settings.json").write_text(json.dumps({"a": 1}))
    (tmp_path / "broken.nii.gz").write_bytes(b"not gzip")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path / "settings.json")) is None
    assert get_reader(str(tmp_path / "missing.png")) is None
    assert get_reader(str(tmp_path)) is None
    # ours but broken: the reader is offered and its error names the file
    reader = get_reader(str(tmp_path / "broken.nii.gz"))
    assert reader is not None
    with pytest.raises(ValueError, match="broken.nii.gz"):
        reader(str(tmp_path / "broken.nii.gz"))


def test_bccd_and_msd_open_in_napari(shared_data, make_napari_viewer):  # skip before a viewer exists
    viewer = make_napari_viewer()
    viewer.open(str(shared_data / "bccd" / "Annotations" / "BloodImage_00000.xml"), plugin=PLUGIN)
    image, shapes = viewer.layers
    assert image.data.shape == (480, 640, 3)
    assert set(shapes.features["class"]) == {"RBC", "WBC"} and set(shapes.features["source"]) == {"file"}
    wbc = list(shapes.features["class"]).index("WBC")
    # VOC 260,177,491,376 (1-based, inclusive) -> rows 176..376, cols 259..491 in napari
    np.testing.assert_allclose(shapes.data[wbc].min(0), [176, 259])
    np.testing.assert_allclose(shapes.data[wbc].max(0), [376, 491])
    viewer.layers.clear()
    root = shared_data / "msd_hippocampus"
    viewer.open(str(root / "imagesTr" / "hippocampus_001.nii.gz"), plugin=PLUGIN)
    viewer.open(str(root / "labelsTr" / "hippocampus_001.nii.gz"), plugin=PLUGIN)
    assert layer_types(viewer) == ["Image", "Labels"]
    assert viewer.layers[1].name == "hippocampus_001 labels"
    assert viewer.layers[0].data.shape == viewer.layers[1].data.shape
    np.testing.assert_allclose(viewer.layers[0].affine.affine_matrix, viewer.layers[1].affine.affine_matrix)
    np.testing.assert_allclose(viewer.layers[0].scale, viewer.layers[1].scale)


def test_plain_images_csv_boxes_and_multichannel_volumes(make_napari_viewer, tmp_path):
    from PIL import Image

    from napari_bloodcell.core.io.nifti import save_nifti

    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    Image.fromarray(rgba).save(tmp_path / "field.png")
    Image.fromarray((np.arange(600, dtype=np.uint16) * 100).reshape(20, 30)).save(tmp_path / "grey16.png")
    (tmp_path / "boxes.csv").write_text("image,xmin,ymin,xmax,ymax,label\nfield.png,0.1,0.1,0.5,0.5,wbc\n")
    vol = np.random.default_rng(0).random((6, 7, 8, 2)).astype(np.float32)
    save_nifti(vol, np.diag([0.5, 0.6, 0.7, 1.0]), tmp_path / "t1_t2.nii.gz")
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "field.png"), plugin=PLUGIN)
    assert viewer.layers[-1].rgb and viewer.layers[-1].data.shape == (20, 30, 3)
    viewer.open(str(tmp_path / "grey16.png"), plugin=PLUGIN)
    grey = viewer.layers[-1]
    assert grey.data.dtype == np.uint16 and tuple(grey.contrast_limits) == (0.0, 59900.0)
    viewer.layers.clear()
    viewer.open(str(tmp_path / "boxes.csv"), plugin=PLUGIN)
    assert layer_types(viewer) == ["Image", "Shapes"]
    np.testing.assert_allclose(viewer.layers[1].data[0].min(0), [2, 3])  # rows from y, cols from x
    viewer.layers.clear()
    viewer.open(str(tmp_path / "t1_t2.nii.gz"), plugin=PLUGIN)
    assert layer_types(viewer) == ["Image", "Image"]
    assert [layer.name for layer in viewer.layers] == ["t1_t2 [channel 0]", "t1_t2 [channel 1]"]
    for layer in viewer.layers:
        np.testing.assert_allclose(layer.scale, (0.5, 0.6, 0.7))
        assert layer.data.shape == (6, 7, 8) and layer.axis_labels == ("L→R", "P→A", "I→S")


def test_hand_drawn_boxes_take_the_image_size_from_the_viewer(make_napari_viewer, sample_data, tmp_path):
    viewer = make_napari_viewer()
    viewer.open(str(sample_data / "smear" / "JPEGImages" / "smear_0001.png"), plugin=PLUGIN)
    drawn = viewer.add_shapes(np.array([[[10.0, 20.0], [10.0, 60.0], [40.0, 60.0], [40.0, 20.0]]]),
                              shape_type="rectangle", name="my boxes")
    drawn.save(str(tmp_path / "mine.json"), plugin=PLUGIN)
    rec = read_coco(tmp_path / "mine.json").images[0]
    assert (rec.file_name, rec.width, rec.height) == ("smear_0001.png", 640, 480)
    np.testing.assert_allclose(rec.boxes, [[20, 10, 60, 40]])
    viewer.layers.remove(viewer.layers[0])  # no image left: the size is unknown, and the error says so
    with pytest.raises(LayerNotWritten, match="could not save 'my boxes'.*not linked to an image"):
        drawn.save(str(tmp_path / "orphan.json"), plugin=PLUGIN)
    assert not (tmp_path / "orphan.json").exists()
