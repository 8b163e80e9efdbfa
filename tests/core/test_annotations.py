"""The annotation table: every change undoes and redoes exactly, provenance is kept, sidecars restore it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_bloodcell.core.annotations import AnnotationTable
from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.io.records import ImageRecord
from napari_bloodcell.core.review_project import (
    Autosaver,
    ReviewProject,
    image_digest,
    image_key,
)

CLASSES = ["RBC", "WBC", "Platelets"]
MODEL = "yolov3:best@0123abcd"


def model_table(n: int = 6) -> AnnotationTable:
    boxes = np.array([[10 * i, 5, 10 * i + 8, 13] for i in range(n)], dtype=float)
    rec = ImageRecord("a.png", 100, 50, boxes=boxes, labels=[i % 3 for i in range(n)],
                      scores=np.linspace(0.9, 0.1, n), sources=[MODEL] * n, reviews=["unreviewed"] * n)
    return AnnotationTable.from_record(rec, CLASSES)


def state(table: AnnotationTable) -> dict:
    c = table.rows.columns
    return {"id": c["id"].tolist(), "box": c["box"].tolist(), "label": c["label"].tolist(),
            "review": list(c["review"]), "flags": [list(f) for f in c["flags"]], "by": list(c["changed_by"])}


@pytest.mark.parametrize("change", ["add", "delete", "move", "class", "review", "flags"])
def test_each_change_undoes_and_redoes_exactly(change):
    table = model_table()
    start = state(table)
    ids = table.ids[[1, 3]]
    if change == "add":
        table.add([[1, 1, 5, 5]], [1], by="dr.x")
    elif change == "delete":
        table.delete(ids, by="dr.x")
    elif change == "move":
        table.move(ids, [[0, 0, 4, 4], [1, 1, 9, 9]], by="dr.x")
    elif change == "class":
        table.set_class(ids, "WBC", by="dr.x")
    elif change == "review":
        table.set_review(ids, "not_classed", by="dr.x")
    else:
        table.set_flags(ids, ["target", "spherocyte"], by="dr.x")
    changed = state(table)
    assert changed != start
    table.undo()
    assert state(table) == start
    table.redo()
    assert state(table) == changed
    assert table.revision == 3


def test_class_change_sets_review_and_provenance():
    table = model_table()
    ids = table.ids[:3]  # labels 0,1,2
    table.set_class(ids, 1, by="dr.x")
    info = [table.object_info(i) for i in ids]
    assert [i["review"] for i in info] == ["corrected", "accepted", "corrected"]
    assert all(i["class"] == "WBC" and i["changed_by"] == "dr.x" and i["source"] == MODEL for i in info)
    assert table.object_info(table.ids[4])["changed_by"] == MODEL  # untouched cells keep their maker


def test_undo_of_delete_restores_position_and_new_edit_clears_redo():
    table = model_table()
    table.delete([table.ids[2]], by="p")
    table.undo()
    assert table.ids.tolist() == [1, 2, 3, 4, 5, 6]
    table.set_review([1], "accepted", by="p")
    assert table.redo() is None


def test_queue_orders_least_certain_first_and_blocks_signing():
    table = model_table()
    assert table.queue().tolist() == [6, 5, 4, 3, 2, 1]  # scores fall with position
    table.rows.columns["margin"][0] = 0.01  # a classified cell with a tiny margin jumps the queue
    assert table.queue()[0] == 1
    with pytest.raises(BloodcellInputError, match="uncertain cell"):
        table.sign("dr.x")
    table.set_review(table.blocking_signoff(), "accepted", by="dr.x")
    signed = table.sign("dr.x")
    assert signed["by"] == "dr.x" and table.signature_valid
    table.set_class([2], "RBC", by="dr.x")
    assert not table.signature_valid


def test_unknown_ids_classes_and_states_are_clear_errors():
    table = model_table()
    with pytest.raises(BloodcellInputError, match="id 99"):
        table.set_class([99], 0, by="p")
    with pytest.raises(BloodcellInputError, match="unknown class 'Blast'"):
        table.set_class([1], "Blast", by="p")
    with pytest.raises(BloodcellInputError, match="class number 10"):
        table.set_class([1], 9, by="p")
    with pytest.raises(BloodcellInputError, match="allowed: unreviewed"):
        table.set_review([1], "maybe", by="p")


def test_record_round_trip_keeps_flags_margin_and_provenance():
    table = model_table()
    table.set_flags([2], ["target"], by="dr.x")
    table.add([[3, 3, 9, 9]], [0], by="dr.x")
    rec = table.to_record("a.png", 100, 50)
    again = AnnotationTable.from_record(rec, CLASSES)
    assert state(again)["flags"] == state(table)["flags"]
    assert state(again)["by"] == state(table)["by"]
    assert list(again.col("source")) == list(table.col("source"))
    assert np.allclose(again.col("changed"), np.floor(table.col("changed")), atol=1.0)


def test_large_class_change_is_cheap():
    n = 10_000
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 3000, (n, 2))
    rec = ImageRecord("big.png", 4000, 4000, boxes=np.hstack([xy, xy + 20]), labels=rng.integers(0, 3, n),
                      scores=rng.uniform(0, 1, n), sources=[MODEL] * n, reviews=["unreviewed"] * n)
    table = AnnotationTable.from_record(rec, CLASSES)
    pick = rng.choice(table.ids, 1000, replace=False)
    table.set_class(pick, "WBC", by="p")
    assert (table.col("label")[table.positions(pick)] == 1).all()
    table.undo()
    assert np.array_equal(table.col("label"), rec.labels)


def test_project_autosaves_every_change_and_restores(tmp_path):
    project = ReviewProject(tmp_path / "proj")
    table = model_table()
    key = image_key("a.png", image_digest(array=np.zeros((5, 5), np.uint8)))
    image = {"file_name": "a.png", "width": 100, "height": 50}
    saver = Autosaver(project, key, table, image)
    table.set_class([1], "Platelets", by="dr.x")
    table.add([[2, 2, 6, 6]], [1], by="dr.x")
    loaded, meta = ReviewProject(tmp_path / "proj", create=False).load(key)
    assert state(loaded) == state(table) and meta == image and loaded.revision == table.revision
    saved = json.loads(project.sidecar(key).read_text())
    assert [h["kind"] for h in saved["history"]] == ["class", "add"]
    saver.close()


def test_background_autosave_writes_the_newest_state(tmp_path):
    project = ReviewProject(tmp_path / "proj")
    table = model_table()
    saver = Autosaver(project, "k", table, {"file_name": "a.png"}, background=True)
    for i in table.ids:
        table.set_review([i], "accepted", by="p")
    assert saver.flush()
    loaded, _ = project.load("k")
    assert state(loaded) == state(table)
    saver.close()


def test_project_refuses_a_folder_with_other_files(tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(BloodcellInputError, match="other files"):
        ReviewProject(tmp_path)
    with pytest.raises(BloodcellInputError, match="not a review project"):
        ReviewProject(tmp_path / "nothing", create=False)


def test_a_killed_process_keeps_every_saved_change(tmp_path):
    """The autosave is written before the change returns: a process killed right after a change still has it."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from napari_bloodcell.core.annotations import AnnotationTable
        from napari_bloodcell.core.io.records import ImageRecord
        from napari_bloodcell.core.review_project import Autosaver, ReviewProject
        rec = ImageRecord("a.png", 100, 50, boxes=[[1, 1, 9, 9], [20, 1, 29, 9]], labels=[0, 0], scores=[0.2, 0.9])
        table = AnnotationTable.from_record(rec, ["RBC", "WBC"])
        Autosaver(ReviewProject({str(tmp_path / "proj")!r}), "k", table, {{"file_name": "a.png"}})
        table.set_class([1], "WBC", by="p")
        table.add([[40, 1, 49, 9]], ["WBC"], by="p")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    loaded, _ = ReviewProject(tmp_path / "proj", create=False).load("k")
    assert loaded.col("label").tolist() == [1, 0, 1] and loaded.revision == 2
