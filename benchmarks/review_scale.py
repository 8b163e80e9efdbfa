"""How the review copes with a crowded field: open 10,000 boxes, change the class of 1,000 selected cells.

    xvfb-run -a .venv/bin/python benchmarks/review_scale.py [--cells 10000] [--selection 1000] [--repeat 5]

A 4000×4000 synthetic field gets N model boxes (random classes and scores) written into a review project, as
``bloodcell review import`` would. Measured on a shown viewer, each time until Qt has processed every pending
event (so the drawing is included):

* ``open_s``: the Review widget's *Start / resume* on that field (sidecar read, table, outline/marker/edit layers,
  gallery thumbnails, differential), the path a reviewer takes to open a field;
* ``display_only_s``: just the three review layers for the table;
* ``shapes_s``: for comparison, the same boxes as one napari Shapes layer of rectangles;
* ``class_change_ms``: a class key on a rubber-band selection of M cells (table change with undo record, autosave
  snapshot handed to the writer thread, outline and marker recolouring, redraw); median of ``--repeat``, each
  press timed on an idle viewer (the previous autosave written, the panels redrawn);
* ``undo_ms``: undoing that change.

Prints one JSON object; docs/benchmarks.md has the numbers measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def settle(widget, app) -> None:
    """Between key presses a person takes far longer than the autosave write and the panels' delayed redraw;
    let both finish so each timing is one key press on an idle viewer (not a press queued behind the last)."""
    widget.session.saver.flush()
    deadline = time.perf_counter() + 0.5
    while time.perf_counter() < deadline:
        app.processEvents()
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--selection", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--side", type=int, default=4000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bloodcell-scale-"))
    os.environ["BLOODCELL_HOME"] = str(work / "home")

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_bloodcell.core.io.images import png_bytes
    from napari_bloodcell.core.io.records import AnnotationSet, ImageRecord
    from napari_bloodcell.core.review_project import ReviewProject, import_predictions
    from napari_bloodcell.gui.review_display import ReviewDisplay
    from napari_bloodcell.gui.widgets.review import ReviewWidget

    rng = np.random.default_rng(0)
    side, n = args.side, args.cells
    field = np.full((side, side, 3), 225, np.uint8)
    field[::37, :, 0] = 180
    path = work / "crowded_field.png"
    path.write_bytes(png_bytes(field))
    xy = rng.uniform(0, side - 40, (n, 2))
    wh = rng.uniform(12, 36, (n, 2))
    rec = ImageRecord(path.name, side, side, boxes=np.hstack([xy, xy + wh]), labels=rng.integers(0, 3, n),
                      scores=rng.uniform(0.05, 1, n), sources=["bench:model"] * n, reviews=["unreviewed"] * n,
                      path=path)
    classes = ["RBC", "WBC", "Platelets"]
    import_predictions(ReviewProject(work / "project"), AnnotationSet(classes, [rec]))

    app = QApplication.instance() or QApplication([])
    viewer = napari.Viewer(show=True)
    viewer.open(str(path), plugin="napari-bloodcell")
    app.processEvents()
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Review cells")
    widget.project_edit.setText(str(work / "project"))
    widget.reviewer_edit.setText("bench")
    app.processEvents()

    t = time.perf_counter()
    widget.start()
    app.processEvents()
    open_s = time.perf_counter() - t
    table, display = widget.session.table, widget.session.display
    assert len(table) == n, widget.cell_label.text()

    changes, undos = [], []
    for k in range(args.repeat):
        picks = rng.choice(n, args.selection, replace=False)
        display.markers.selected_data = set(picks.tolist())
        settle(widget, app)
        t = time.perf_counter()
        widget.assign((k % 2) + 1)
        app.processEvents()
        changes.append(1000 * (time.perf_counter() - t))
        assert (table.col("label")[picks] == (k % 2) + 1).all()
        settle(widget, app)
        t = time.perf_counter()
        widget.undo()
        app.processEvents()
        undos.append(1000 * (time.perf_counter() - t))
        settle(widget, app)
    widget.session.saver.flush()

    t = time.perf_counter()
    extra = ReviewDisplay(viewer, table, "again", lambda: "bench", lambda: 0)
    app.processEvents()
    display_only_s = time.perf_counter() - t
    extra.close()

    from napari_bloodcell.core.boxes import xyxy_to_napari

    t = time.perf_counter()
    viewer.add_shapes(list(xyxy_to_napari(table.col("box"))), shape_type="rectangle", edge_color="yellow",
                      face_color="transparent", name="shapes comparison")
    app.processEvents()
    shapes_s = time.perf_counter() - t

    print(json.dumps({
        "cells": n, "selection": args.selection, "field": f"{side}x{side}", "open_s": round(open_s, 3),
        "display_only_s": round(display_only_s, 3), "shapes_s": round(shapes_s, 3),
        "class_change_ms": round(statistics.median(changes), 1), "class_change_ms_all": [round(c, 1) for c in changes],
        "undo_ms": round(statistics.median(undos), 1), "sidecar_mb": round(
            widget.session.saver.path.stat().st_size / 1e6, 2),
        "cpu_count": os.cpu_count(),
    }))
    widget.close_session()
    viewer.close()


if __name__ == "__main__":
    main()
