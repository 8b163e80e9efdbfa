"""Point annotations in napari: the three point layouts open as Points layers (napari's (row, col) = (y, x)) with
class/source/review features, a Points layer saves back through the writer, hostile files give one clear error,
the review works on cells grown from points, and red cells show their morphology in caption and gallery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.io.points import CHULA_TYPES, PointRecord, PointSet, read_points, write_points
from napari_bloodcell.core.review_project import ReviewProject
from napari_bloodcell.gui._reader import get_reader
from napari_bloodcell.gui._writer import LayerNotWritten
from napari_bloodcell.gui._writer import write_points as write_points_layer
from napari_bloodcell.gui.layers import class_colours
from napari_bloodcell.gui.review_display import cell_caption, morphologies

ME = "dr.points"
CENTRES = [(30.0, 25.0), (80.0, 40.0), (45.0, 70.0)]
"""x, y of three discs (cells) in the synthetic field."""
TYPES = [0, 3, 4]  # normal, spherocyte, target cell


def write_image(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path)


def field(width: int = 120, height: int = 100) -> np.ndarray:
    """A pale field with three dark pink discs of radius 11: cells whose outline grow_boxes can find."""
    yy, xx = np.mgrid[:height, :width]
    img = np.full((height, width, 3), (235, 225, 230), np.uint8)
    for x, y in CENTRES:
        img[(xx - x) ** 2 + (yy - y) ** 2 <= 11 ** 2] = (190, 90, 120)
    return img


def point_set(tmp_path: Path, names=("a", "b"), folder: str = "") -> PointSet:
    """Images ``names`` written under tmp_path/folder, with the three points on each (the second image's shifted)."""
    out = tmp_path / folder if folder else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for k, name in enumerate(names):
        write_image(out / f"{name}.png", field())
        xy = np.asarray(CENTRES) + [k, 0]
        records.append(PointRecord(f"{name}.png", 120, 100, xy, TYPES, out / f"{name}.png"))
    return PointSet(list(CHULA_TYPES), records)


def read_layers(path: Path):
    reader = get_reader(str(path))
    assert reader is not None, f"{path} not claimed"
    return reader(str(path))


def check_points_layer(layers, n_images: int) -> tuple:
    kinds = [kind for _, _, kind in layers]
    assert kinds == ["image", "points"]
    data, kwargs, _ = layers[-1]
    features = kwargs["features"]
    expected = np.asarray(CENTRES)[:, ::-1]  # (row, col) = (y, x)
    if n_images == 1:
        assert data.shape == (3, 2)
        np.testing.assert_allclose(data, expected, atol=0.01)
    else:
        assert data.shape == (3 * n_images, 3)
        np.testing.assert_allclose(data[:3, 1:], expected, atol=0.01)
        np.testing.assert_allclose(data[3:, 1:], expected + [0, 1], atol=0.01)  # x shifted by one on image 2
        assert data[:3, 0].tolist() == [0, 0, 0] and data[3:, 0].tolist() == [1, 1, 1]
        assert layers[0][0].shape[:3] == (n_images, 100, 120)  # the images open too (lazy stack)
    assert features["class"].tolist()[:3] == ["normal", "spherocyte", "target cell"]
    assert str(features["class"].dtype) == "category"
    assert set(features["source"]) == {"file"} and set(features["review"]) == {"accepted"}
    assert kwargs["text"]["visible"] is False and kwargs["face_color"] == "class"
    return data, kwargs


def test_reader_round_trip_of_the_three_layouts(tmp_path):
    # x y type: Chula's layout, Label/ beside Dataset/
    chula = tmp_path / "chula"
    pset = point_set(chula, folder="Dataset")
    write_points(pset, chula / "Label", "xyt")
    check_points_layer(read_layers(chula), 2)
    data, _ = check_points_layer(read_layers(chula / "Label" / "a.txt"), 1)  # one file: its image beside
    # CSV x,y,class with an image column; COCO keypoints (a .json the box reader would also claim)
    for name, fmt in (("points.csv", "csv"), ("points.json", "coco")):
        folder = tmp_path / fmt
        write_points(point_set(folder), folder / name, fmt)
        check_points_layer(read_layers(folder / name), 2)
    single = tmp_path / "single"
    write_points(point_set(single, names=("c",)), single / "c.csv", "csv")
    check_points_layer(read_layers(single / "c.csv"), 1)


def test_the_points_open_in_a_viewer_coloured_by_class(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    write_points(point_set(tmp_path, names=("a",)), tmp_path / "a.csv", "csv")
    viewer.open(str(tmp_path / "a.csv"), plugin="napari-bloodcell")
    layer = viewer.layers["a points"]
    colours = class_colours(list(CHULA_TYPES))
    assert colours == class_colours(sorted(CHULA_TYPES))  # a type's colour does not depend on the class list
    for k, name in enumerate(["normal", "spherocyte", "target cell"]):
        rgb = "#" + "".join(f"{round(v * 255):02x}" for v in layer.face_color[k][:3])
        assert rgb == colours[name]
    assert len(set(colours.values())) == len(CHULA_TYPES)  # 13 morphologies, 13 colours
    layer.add([10.0, 10.0])  # a point a person adds is theirs
    assert layer.features.iloc[-1][["source", "review"]].tolist() == ["person", "corrected"]
    viewer.layers.selection = {layer}  # File ▸ Save Selected Layers goes through the manifest's points writer
    saved = viewer.layers.save(str(tmp_path / "saved.json"), selected=True, plugin="napari-bloodcell")
    back = read_points(saved[0], images=tmp_path)
    assert len(back.images[0]) == 4 and back.format == "coco"


def test_writer_saves_a_points_layer_in_each_format(tmp_path):
    layers = read_layers(_single_csv(tmp_path))
    data, kwargs, _ = layers[-1]
    data = np.vstack([data, [[90.0, 100.0]]])  # a point added by hand, a new class
    features = kwargs["features"]
    features = features.reindex(range(4))
    features["class"] = features["class"].cat.add_categories(["schistocyte"])
    features.loc[3, ["class", "source", "review"]] = ["schistocyte", "person", "corrected"]
    attrs = {**kwargs, "features": features}
    out = tmp_path / "out"
    for name in ("p.csv", "p.json", "p.txt"):
        written = write_points_layer(str(out / name), data, attrs)
        assert Path(written[0]).is_file()
        back = read_points(out / name, images=tmp_path)
        rec = back.images[0]
        np.testing.assert_allclose(rec.points, [*CENTRES, (100.0, 90.0)], atol=0.01)
        assert [back.classes[i] for i in rec.labels] == ["normal", "spherocyte", "target cell", "schistocyte"]
    assert (out / "classes.txt").is_file()
    again = write_points_layer(str(out / "p.csv"), data, attrs)  # never over the old file silently
    assert list(out.glob("p.*.bak")) and Path(again[0]).is_file()
    with pytest.raises(LayerNotWritten, match="not linked to an image"):
        write_points_layer(str(out / "q.csv"), data, {"features": features, "metadata": {}})
    with pytest.raises(LayerNotWritten, match="outside"):
        write_points_layer(str(out / "q.csv"), data * 10, attrs)


def test_writer_saves_a_stack_as_a_folder_of_xyt_files(tmp_path):
    write_points(point_set(tmp_path), tmp_path / "two.csv", "csv")
    data, kwargs, _ = read_layers(tmp_path / "two.csv")[-1]
    written = write_points_layer(str(tmp_path / "out" / "labels.txt"), data, kwargs)
    folder = tmp_path / "out" / "labels"
    assert sorted(Path(p).name for p in written) == ["a.txt", "b.txt", "classes.txt"]
    back = read_points(folder, images=tmp_path)
    assert [r.stem for r in back.images] == ["a", "b"]
    np.testing.assert_allclose(back.images[1].points, np.asarray(CENTRES) + [1, 0], atol=0.01)
    assert [back.classes[i] for i in back.images[1].labels] == ["normal", "spherocyte", "target cell"]


def _single_csv(tmp_path: Path) -> Path:
    write_points(point_set(tmp_path, names=("a",)), tmp_path / "a.csv", "csv")
    return tmp_path / "a.csv"


@pytest.mark.parametrize("text, message", [
    ("10 20 0\nnan 5 1\n", "x on line 2"),
    ("10 20 0\n5000 5 1\n", "outside"),
    ("1 2 0\n" * 1_000_000, "more than"),
])
def test_hostile_point_files_give_a_clear_error(tmp_path, text, message):
    write_image(tmp_path / "f.png", field())
    path = tmp_path / "f.txt"
    path.write_text(text)
    reader = get_reader(str(path))
    assert reader is not None
    with pytest.raises(BloodcellInputError, match=message):
        reader(str(path))


def test_text_files_that_are_not_points_are_left_to_others(tmp_path):
    (tmp_path / "notes.txt").write_text("a smear from ward 3\n")
    (tmp_path / "yolo.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader(str(tmp_path / "yolo.txt")) is None


def press(viewer, key: str) -> None:
    viewer.window._qt_viewer.canvas._key_map_handler.press_key(key)


def test_review_on_a_points_layer(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_bloodcell.gui.widgets.review import ReviewWidget

    monkeypatch.setenv("BLOODCELL_HOME", str(tmp_path / "home"))
    viewer = make_napari_viewer()
    viewer.open(str(_single_csv(tmp_path)), plugin="napari-bloodcell")
    points = viewer.layers["a points"]
    points.features = points.features.assign(review="unreviewed")  # a first pass to be checked
    widget = ReviewWidget(viewer)
    widget.project_edit.setText(str(tmp_path / "project"))
    widget.reviewer_edit.setText(ME)
    viewer.add_points(np.zeros((2, 2)), name="plain clicks")  # no class: not a source of cells
    choices = [widget.boxes_combo.itemText(k) for k in range(widget.boxes_combo.count())]
    assert points.name in choices and "plain clicks" not in choices  # the set-up offers the Points layer
    widget.boxes_combo.setCurrentIndex(choices.index(points.name))
    widget.start()
    s = widget.session
    assert s is not None, widget.cell_label.text()
    table = s.table
    assert len(table) == 3 and table.classes[:13] == list(CHULA_TYPES)
    boxes = table.col("box")
    for (x, y), box, attrs in zip(CENTRES, boxes, table.col("attributes")):
        assert attrs["point"] == [x, y]
        assert box[0] <= x <= box[2] and box[1] <= y <= box[3]
        assert 16 <= box[2] - box[0] <= 30  # grown from the disc (diameter 23), not a default square
    np.testing.assert_allclose(s.display.markers.data, np.asarray(CENTRES)[:, ::-1])  # the marker is the point
    assert list(s.display.markers.symbol[:1]) and str(s.display.markers.symbol[0]).lower().endswith("cross")
    assert s.display.markers.features["morphology"].tolist() == ["normal", "spherocyte", "target cell"]

    first = s.display.current
    press(viewer, str(CHULA_TYPES.index("teardrop") + 1))  # key 8: teardrop
    assert table.object_info(first)["class"] == "teardrop"
    second = s.display.current
    press(viewer, "A")
    assert table.object_info(second)["review"] == "accepted"
    third = s.display.current
    press(viewer, "Delete")
    assert table.object_info(third)["review"] == "rejected"
    assert s.display.markers.features["morphology"].tolist()[table.positions([first])[0]] == "teardrop"
    s.saver.flush()
    saved, _ = ReviewProject(tmp_path / "project").load(s.key)
    info = saved.object_info(first)
    assert info["class"] == "teardrop" and info["attributes"]["point"] == list(CENTRES[0])


def test_red_cells_show_their_morphology_and_the_gallery_has_a_tab_per_morphology(qtbot):
    from napari_bloodcell.core.annotations import AnnotationTable
    from napari_bloodcell.gui.widgets.review_panels import CellGallery

    assert morphologies("RBC", ["echinocyte", "smudge"]) == ["burr cell"]
    assert morphologies("target cell") == ["target cell"] and morphologies("neutrophil", ["toxic"]) == []
    assert cell_caption({"class": "RBC", "flags": ["spherocyte"], "score": 0.9}) == "RBC · spherocyte 0.90"
    assert cell_caption({"class": "teardrop", "flags": [], "score": float("nan")}) == "teardrop"

    table = AnnotationTable(["RBC", "WBC", "target cell"])
    boxes = [[10, 10, 30, 30], [40, 10, 60, 30], [70, 10, 90, 30], [10, 40, 30, 60]]
    table.add(boxes, [0, 0, 2, 1], "model", review="unreviewed",
              flags=[["spherocyte"], ["spherocyte", "target cell"], [], []])
    gallery = CellGallery(on_focus=lambda i: None, on_move=lambda ids, name: None)
    qtbot.addWidget(gallery)
    gallery.attach(table, field())
    titles = [gallery.tabs.tabText(k) for k in range(gallery.tabs.count())]
    assert "◆ spherocyte (2)" in titles and "target cell (1)" in titles
    assert not any("◆ target cell" in t for t in titles)  # a class already names it
    tips = [gallery.morphology_lists["spherocyte"].item(k).toolTip() for k in range(2)]
    assert any("RBC · spherocyte, target cell" in tip for tip in tips)
    table.set_flags(table.ids[:2], [], by=ME)  # flags gone: the tab goes too
    gallery.refresh()
    assert "spherocyte" not in gallery.morphology_lists
    assert not any("◆" in gallery.tabs.tabText(k) for k in range(gallery.tabs.count()))


def test_real_chula_field_opens_as_points(shared_data):
    chula = shared_data / "chula_rbc12"
    if not (chula / "Label" / "10.txt").is_file():
        pytest.skip("chula_rbc12 is not present")
    layers = read_layers(chula / "Label" / "10.txt")
    (pixels, _, _), (data, kwargs, kind) = layers
    assert kind == "points" and pixels.shape == (480, 640, 3)
    assert len(data) == len((chula / "Label" / "10.txt").read_text().split("\n")) - 1
    assert (data[:, 0] <= 480).all() and (data[:, 1] <= 640).all()  # (row, col)
    first = (chula / "Label" / "10.txt").read_text().split()[:2]
    np.testing.assert_allclose(data[0], [float(first[1]), float(first[0])])
    assert set(kwargs["features"]["class"]) <= set(CHULA_TYPES)
