"""The Gallery tab over a whole case: every field's cells per class, thumbnails only for the tab on screen, other
fields' images read in the background into a bounded cache, and a click on another field's cell opens it there."""

from __future__ import annotations

import numpy as np

from napari_bloodcell.gui.widgets import case_gallery
from napari_bloodcell.gui.widgets.case_gallery import KEY_ROLE
from napari_bloodcell.gui.widgets.review import GALLERY_TAB
from tests.gui.test_case_panel import case_viewer, home, settle  # noqa: F401 (home is a fixture)


def items(view) -> list:
    return [view.item(k) for k in range(view.count())]


def test_the_gallery_spans_the_case_and_opens_other_fields(make_napari_viewer, qtbot, home, tmp_path,  # noqa: F811
                                                           monkeypatch):
    from qtpy.QtCore import Qt

    monkeypatch.setattr(case_gallery, "IMAGE_CACHE", 2)
    viewer, review, panel, pixels, keys = case_viewer(make_napari_viewer, qtbot, tmp_path)
    assert panel.live == keys["B"]  # opened on the case's least certain cell
    review.tabs.setCurrentIndex(GALLERY_TAB)
    gallery = review.gallery
    assert gallery.case is panel.gallery
    tabs = {gallery.tabs.tabText(k) for k in range(gallery.tabs.count())}
    # A: 2 neutrophils, B: 1, C: 3 (its fourth is not classed); lymphocytes A 1 + B 2; RBC A 1 + C 2
    assert {"neutrophil (6)", "lymphocyte (3)", "RBC (3)", "Not classed (1)"} <= tabs
    shown = gallery.lists["neutrophil"]
    assert gallery.tabs.currentWidget() is shown and shown.count() == 6
    assert gallery.lists["lymphocyte"].count() == 0  # only the tab on screen gets thumbnails
    assert {item.data(KEY_ROLE) for item in items(shown)} == set(keys.values())
    # least certain first over the whole case: B's 0.3 leads
    first = items(shown)[0]
    assert first.data(KEY_ROLE) == keys["B"]
    # other fields' cells can be clicked, not selected (only the open field's cells move to another class)
    for item in items(shown):
        selectable = bool(item.flags() & Qt.ItemIsSelectable)
        assert selectable == (item.data(KEY_ROLE) == keys["B"])
    # the other fields' images arrive in the background; the cache stays bounded
    qtbot.waitUntil(lambda: not panel.gallery._reading, timeout=10_000)
    assert len(panel.gallery.images) <= 2
    assert len(panel.gallery.icons) == 6  # every shown cell has its thumbnail
    assert all(not item.icon().isNull() for item in items(shown))

    gallery.tabs.setCurrentWidget(gallery.lists["lymphocyte"])
    lymphocytes = gallery.lists["lymphocyte"]
    assert lymphocytes.count() == 3
    of_a = next(item for item in items(lymphocytes) if item.data(KEY_ROLE) == keys["A"])
    cell = int(of_a.data(Qt.UserRole))
    gallery._clicked(of_a)  # a click on a cell of field A opens A on that cell
    settle(qtbot, panel)
    assert panel.live == keys["A"] and review.session.display.current == cell
    np.testing.assert_array_equal(np.asarray(panel.layer.data), pixels["A"])
    # the gallery stays on the class tab the reviewer was looking at, now with A's cells selectable
    assert gallery.tabs.currentWidget() is gallery.lists["lymphocyte"]
    qtbot.waitUntil(lambda: gallery.lists["lymphocyte"].count() == 3, timeout=5_000)
    mine = [i for i in items(gallery.lists["lymphocyte"]) if i.data(KEY_ROLE) == keys["A"]]
    assert mine and all(i.flags() & Qt.ItemIsSelectable for i in mine)

    panel.close_case()
    assert gallery.case is None and not panel.gallery.images
