"""The Review widget's Suggest tab: the open case's fields not yet done are ranked in a worker, listed with their
scores, and opened in that order through the Case tab; with no case open it says what to do (issue 19)."""

from __future__ import annotations

from .test_case_panel import case_viewer, home, settle, widget_for  # noqa: F401  (home is a fixture)


def test_suggestions_list_and_open_the_case_fields_in_order(make_napari_viewer, qtbot, home, tmp_path):  # noqa: F811
    viewer, review, panel, pixels, keys = case_viewer(make_napari_viewer, qtbot, tmp_path)
    suggest = review.suggest_panel
    titles = [review.tabs.tabText(i) for i in range(review.tabs.count())]
    assert titles[-1] == "Suggest"
    assert not suggest.buttons["Open next"].isEnabled()
    suggest.model_combo.setCurrentIndex(suggest.model_combo.findData("classical"))
    suggest.strategy_combo.setCurrentText("uncertainty")
    suggest.k_spin.setValue(2)
    suggest.buttons["Suggest"].click()
    # the result arrives through the event loop, so right after the click the job is running
    assert suggest.worker is not None and suggest.result is None
    assert suggest.buttons["Cancel"].isEnabled() and not suggest.buttons["Suggest"].isEnabled()
    qtbot.waitUntil(lambda: suggest.worker is None and suggest.result is not None, timeout=60_000)
    result = suggest.result
    assert suggest.table.rowCount() == 2 == len(result.items)
    assert {s.key for s in result.items} <= set(keys.values())
    scores = [s.score for s in result.items]
    assert scores == sorted(scores, reverse=True)  # uncertainty: the least certain field first
    assert suggest.table.item(0, 0).text() == result.items[0].name
    assert "2 of 3 field(s) by uncertainty" in suggest.status.text()
    for s in result.items:  # Open next walks the list, through the Case tab
        suggest.buttons["Open next"].click()
        settle(qtbot, panel)
        assert panel.live == s.key
    assert not suggest.buttons["Open next"].isEnabled()
    suggest.result_case = "slide-2"  # suggestions made for another case never open a field of this one
    live = panel.live
    suggest.open_suggestion(0)
    assert "not a field of the open case" in suggest.status.text() and panel.live == live
    viewer.close()


def test_without_a_case_it_says_to_open_one(make_napari_viewer, qtbot, home, tmp_path):  # noqa: F811
    from napari_bloodcell.core.review_project import ReviewProject

    viewer, review, panel = widget_for(make_napari_viewer, ReviewProject(tmp_path / "p"))
    review.suggest_panel.buttons["Suggest"].click()
    assert "no case is open" in review.suggest_panel.status.text()
    assert review.suggest_panel.worker is None
