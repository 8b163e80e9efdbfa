"""The Review widget's Case tab: PageDown/PageUp/click move between fields and their image, N/P follow the
case-wide queue into other fields, the case differential counts every field towards the target, the case can be
signed only when every field is done, and a bad case file is an error message."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_bloodcell.core.annotations import AnnotationTable
from napari_bloodcell.core.cases import Case, CaseSettings
from napari_bloodcell.core.io.images import png_bytes
from napari_bloodcell.core.review_project import ReviewProject, image_digest, image_key
from napari_bloodcell.gui.widgets.review import ReviewWidget

ME = "dr.case"
CLASSES = ["neutrophil", "lymphocyte", "RBC"]
# per field: labels, scores, review state of every cell (C is reviewed, one of its cells not classed)
FIELDS = {
    "A": ([0, 0, 1, 2], [0.9, 0.8, 0.95, 0.7], ["unreviewed"] * 4),
    "B": ([0, 1, 1], [0.3, 0.9, 0.85], ["unreviewed"] * 3),
    "C": ([0, 0, 0, 2, 2, 0], [0.99] * 6, ["accepted"] * 5 + ["not_classed"]),
}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOODCELL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def make_case(tmp_path, reference: dict | None = None) -> tuple[ReviewProject, dict[str, np.ndarray], dict[str, str]]:
    """Three small fields with reviews in a project, and a case of them in the order A, B, C."""
    project = ReviewProject(tmp_path / "project")
    rng = np.random.default_rng(0)
    pixels, keys, paths = {}, {}, []
    for name, (labels, scores, reviews) in FIELDS.items():
        image = rng.integers(0, 255, (90 + 10 * len(pixels), 120, 3), dtype=np.uint8)
        path = tmp_path / "slide" / f"field_{name}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(png_bytes(image))
        n = len(labels)
        boxes = np.stack([np.arange(n) * 20 + 2, np.full(n, 5), np.arange(n) * 20 + 18, np.full(n, 21)], 1)
        table = AnnotationTable(CLASSES)
        ids = table.add(boxes, labels, "model:test", scores=scores, review="unreviewed")
        table.undo_stack.clear()
        table.revision = 0  # as imported: not started
        for state in set(reviews) - {"unreviewed"}:
            table.set_review(ids[np.asarray(reviews) == state], state, by=ME)
        digest = image_digest(path)
        key = image_key(path.name, digest)
        project.save(key, table, {"file_name": path.name, "width": 120, "height": image.shape[0],
                                  "path": str(path), "digest": digest})
        pixels[name], keys[name] = image, key
        paths.append(path)
    Case.create(project, "slide-1", by=ME, settings=CaseSettings(reference=reference)).add_images(paths)
    return project, pixels, keys


def widget_for(make_napari_viewer, project):
    """A viewer with the Review widget on ``project`` and its case list read."""
    viewer = make_napari_viewer()
    review = ReviewWidget(viewer)
    review.project_edit.setText(str(project.folder))
    review.reviewer_edit.setText(ME)
    review.case_panel.refresh_names()
    return viewer, review, review.case_panel


def case_viewer(make_napari_viewer, qtbot, tmp_path, reference: dict | None = None):
    project, pixels, keys = make_case(tmp_path, reference)
    viewer, review, panel = widget_for(make_napari_viewer, project)
    panel.open_case("slide-1")
    settle(qtbot, panel)
    return viewer, review, panel, pixels, keys


def settle(qtbot, panel) -> None:
    qtbot.waitUntil(lambda: panel.busy == 0 and panel.review.session is not None and panel.live == panel.wanted,
                    timeout=20_000)


def press(viewer, key: str) -> None:
    viewer.window._qt_viewer.canvas._key_map_handler.press_key(key)


def shown(panel) -> np.ndarray:
    return np.asarray(panel.layer.data)


def test_fields_move_with_page_keys_and_clicks(make_napari_viewer, qtbot, home, tmp_path):
    viewer, review, panel, pixels, keys = case_viewer(make_napari_viewer, qtbot, tmp_path)
    # the case opens at the field holding its least certain cell (B's 0.3), on that cell
    assert panel.live == keys["B"]
    assert np.array_equal(shown(panel), pixels["B"])
    table = review.session.table
    assert table.object_info(review.session.display.current)["score"] == 0.3
    texts = [[panel.field_list.item(r, c).text() for c in range(5)] for r in range(3)]
    assert texts[0] == ["field_A", "new", "4", "4", "0"]
    assert texts[1][3:] == ["3", "1"]  # B: 3 unreviewed, one of them uncertain
    assert texts[2][1:] == ["review", "6", "0", "0"]  # C: reviewed (one not classed), not signed
    layers_before = len(viewer.layers)

    viewer.layers.selection.active = review.session.display.markers  # keys work whichever layer is active
    press(viewer, "PageDown")
    settle(qtbot, panel)
    assert panel.live == keys["C"] and np.array_equal(shown(panel), pixels["C"])
    press(viewer, "PageDown")  # past the last field: stays
    settle(qtbot, panel)
    assert panel.live == keys["C"] and "last field" in panel.status.text()
    press(viewer, "PageUp")
    settle(qtbot, panel)
    press(viewer, "PageUp")
    settle(qtbot, panel)
    assert panel.live == keys["A"] and np.array_equal(shown(panel), pixels["A"])
    panel.field_list.cellClicked.emit(2, 0)
    settle(qtbot, panel)
    assert panel.live == keys["C"] and np.array_equal(shown(panel), pixels["C"])
    assert len(viewer.layers) == layers_before  # one image layer and the review layers, reused
    assert review.session.table is panel.data.tables[keys["C"]]  # the live table is the case's entry
    panel.close_case()
    assert review.session is None


def test_queue_spans_the_case_and_edits_are_saved(make_napari_viewer, qtbot, home, tmp_path):
    viewer, review, panel, pixels, keys = case_viewer(make_napari_viewer, qtbot, tmp_path)
    b = review.session.table
    first = review.session.display.current
    press(viewer, "N")  # the next least certain cell of the case is A's 0.7: A opens on it
    settle(qtbot, panel)
    assert panel.live == keys["A"] and np.array_equal(shown(panel), pixels["A"])
    assert review.session.table.object_info(review.session.display.current)["score"] == 0.7
    press(viewer, "P")  # and back to B's 0.3
    settle(qtbot, panel)
    assert panel.live == keys["B"] and review.session.display.current == first
    press(viewer, "2")  # B's least certain cell becomes a lymphocyte; the field stays open
    assert b.object_info(first)["class"] == "lymphocyte" and panel.live == keys["B"]
    press(viewer, "PageDown")
    settle(qtbot, panel)
    review.flush_closed()
    saved = ReviewProject(tmp_path / "project").load(keys["B"])[0]
    assert saved.object_info(first)["class"] == "lymphocyte"  # the closed field's autosave was written
    qtbot.waitUntil(lambda: panel.field_list.item(1, 4).text() == "0")  # B's uncertain cell was seen
    assert panel.field_list.item(1, 1).text() == "review"
    panel.close_case()


def test_case_differential_counts_every_field(make_napari_viewer, qtbot, home, tmp_path):
    reference = {"neutrophil": [40, 75], "lymphocyte": [40, 60]}  # 33% lymphocytes: low
    viewer, review, panel, pixels, keys = case_viewer(make_napari_viewer, qtbot, tmp_path, reference)
    count = panel.count
    stats = count.stats
    assert not count.isHidden()
    assert stats.white_total == 9 and stats.remaining == 91 and stats.not_classed == 1
    rows = {count.grid.item(r, 0).text(): [count.grid.item(r, c).text() for c in range(1, 5)]
            for r in range(count.grid.rowCount())}
    assert rows["neutrophil"][:2] == ["6", "66.7"] and rows["lymphocyte"][:2] == ["3", "33.3 L"]
    assert rows["neutrophil"][3] == "–"  # no WBC count entered
    assert "9 of 100" in count.progress.text() and "91 more" in count.summary.text()
    count.target.setCurrentText("200")
    count.wbc.setValue(8.0)
    assert count.stats.remaining == 191
    per_litre = float(count.grid.item(0, 4).text())
    assert per_litre == pytest.approx(8.0 * 6 / 9, abs=0.01)
    settings = Case.open(ReviewProject(tmp_path / "project"), "slide-1").settings
    assert settings.target == 200 and settings.wbc_per_litre == pytest.approx(8e9)
    press(viewer, "1")  # B's lymphocyte at 0.3 ... stays: the live table's change reaches the case count
    press(viewer, "R")  # the next cell is not classed
    qtbot.waitUntil(lambda: count.stats.not_classed == 2, timeout=5_000)
    assert count.stats.white_total == 8
    assert "RBC" in count.apart.text() or count.stats.red_total == 3
    panel.close_case()


def test_sign_case_only_when_every_field_is_done(make_napari_viewer, qtbot, home, tmp_path):
    viewer, review, panel, pixels, keys = case_viewer(make_napari_viewer, qtbot, tmp_path)
    sign = panel.buttons["Sign case"]
    assert not sign.isEnabled() and "uncertain" in panel.sign_label.text()
    for k in range(3):
        panel.open_field(k)
        settle(qtbot, panel)
        table = review.session.table
        unreviewed = table.ids[table.col("review") == "unreviewed"]
        if len(unreviewed):
            table.set_review(unreviewed, "accepted", by=ME)
        review.sign()
        assert table.signature_valid
    qtbot.waitUntil(sign.isEnabled, timeout=5_000)
    sign.click()
    qtbot.waitUntil(lambda: panel.busy == 0 and "Case signed" in panel.sign_label.text(), timeout=10_000)
    case = Case.open(ReviewProject(tmp_path / "project"), "slide-1")
    assert case.signed["by"] == ME and case.signature_valid()
    panel.report(tmp_path / "out" / "slide-1.pdf")  # the Report… button, with the path the dialog would give
    qtbot.waitUntil(lambda: panel.busy == 0, timeout=60_000)
    assert panel.last_report == tmp_path / "out" / "slide-1.pdf", panel.status.text()
    assert panel.last_report.read_bytes()[:5] == b"%PDF-" and str(panel.last_report) in panel.status.text()
    review.go_to(int(review.session.table.ids[0]))
    press(viewer, "R")  # any change voids it (the field's signature and so the case's)
    qtbot.waitUntil(lambda: "voided" in panel.sign_label.text(), timeout=5_000)
    assert "1 field(s) are not signed" in panel.sign_label.text()  # Sign case would sign it again (one question)
    panel.close_case()


def test_a_bad_case_file_is_an_error_message(make_napari_viewer, qtbot, home, tmp_path):
    project, _, _ = make_case(tmp_path)
    (project.folder / "cases" / "broken.json").write_text("{not json")
    (project.folder / "cases" / "other.json").write_text(json.dumps({"format": "something else"}))
    viewer, review, panel = widget_for(make_napari_viewer, project)
    for name in ("broken", "other", "missing"):
        panel.open_case(name)
        qtbot.waitUntil(lambda: panel.busy == 0, timeout=10_000)
        assert panel.data is None and review.session is None
        assert "ff6060" in panel.status.text(), panel.status.text()
    panel.case_combo.clear()
    panel._guard(panel.open_case)
    assert "choose a case" in panel.status.text()
