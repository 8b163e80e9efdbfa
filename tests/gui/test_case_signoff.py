"""Sign case without clicking through the fields: when the only thing left is fields not signed (no uncertain cell
anywhere), Sign case asks once and signs them in the reviewer's name, then the case (``case sign --fields``)."""

from __future__ import annotations

from napari_bloodcell.core.cases import Case
from napari_bloodcell.core.review_project import ReviewProject
from tests.gui.test_case_panel import ME, case_viewer, home, press, settle  # noqa: F401 (home is a fixture)


def test_sign_case_signs_the_unsigned_fields_after_one_question(make_napari_viewer, qtbot, home,  # noqa: F811
                                                                 tmp_path, monkeypatch):
    viewer, review, panel, pixels, keys = case_viewer(make_napari_viewer, qtbot, tmp_path)
    sign = panel.buttons["Sign case"]
    assert not sign.isEnabled() and "uncertain" in panel.sign_label.text()  # B's 0.3 cell is not seen yet
    assert panel.live == keys["B"]
    press(viewer, "A")  # the case's only uncertain cell accepted; A (not started), B and C are just unsigned
    qtbot.waitUntil(sign.isEnabled, timeout=5_000)
    assert "3 field(s) are not signed" in panel.sign_label.text()

    asked = []
    monkeypatch.setattr(type(panel), "_confirm", lambda self, text: asked.append(text) or False)
    sign.click()  # declined: nothing is signed
    assert len(asked) == 1 and "3 field(s)" in asked[0] and ME in asked[0]
    assert panel.busy == 0 and not any(t.signature_valid for t in panel.data.tables.values())

    monkeypatch.setattr(type(panel), "_confirm", lambda self, text: asked.append(text) or True)
    sign.click()
    qtbot.waitUntil(lambda: panel.busy == 0 and "Case signed" in panel.sign_label.text(), timeout=10_000)
    assert len(asked) == 2
    project = ReviewProject(tmp_path / "project")
    case = Case.open(project, "slide-1")
    assert case.signed["by"] == ME and case.signature_valid()
    for key in keys.values():  # every field's sidecar carries the reviewer's signature
        table, _ = project.load(key)
        assert table.signature_valid and table.signed["by"] == ME
    rows = [panel.field_list.item(k, 1).text() for k in range(3)]
    assert rows == ["done ✓"] * 3
    assert review.sign_label.text().startswith(f"Signed by {ME}")  # the open field's own line follows
    panel.close_case()
