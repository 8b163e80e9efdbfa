"""How the review copes with a crowded field and with a region of a whole-slide scan.

    xvfb-run -a .venv/bin/python benchmarks/review_scale.py [--cells 10000] [--selection 1000] [--repeat 5]
    xvfb-run -a .venv/bin/python benchmarks/review_scale.py --cells 100000 --out benchmarks/results/review_scale_100k.json
    xvfb-run -a .venv/bin/python benchmarks/review_scale.py --cells 100000 --region [--slide 40000]

Field mode: a 4000×4000 synthetic field gets N model boxes (random classes and scores) written into a review
project, as ``bloodcell review import`` would. Region mode (``--region``): a ``--slide``-sided tiled TIFF (written
here with tifffile, zlib tiles of a flat background, so it is small on disk) opens lazily in napari; N cells lie in
a ``--side``-sided region of it and ``--outside`` more around it; the review opens that region only.

Measured on a shown viewer, each time until Qt has processed every pending event (so the drawing is included):

* ``open_s``: the Review widget's *Start / resume* on that field (sidecar read, table, outline/marker/edit layers,
  differential), the path a reviewer takes to open a field;
* ``display_only_s``: just the three review layers for the table;
* ``shapes_s``: for comparison (``--shapes``, default below 20,000 cells), the same boxes as one Shapes layer;
* ``class_change_ms``: a class key on a selection of M cells among those in view (zoomed to about 2M in view) (table change with undo record, autosave handed to
  the writer thread, outline and marker recolouring, redraw); median of ``--repeat``, each press timed on an idle
  viewer (the previous autosave written, the panels redrawn);
* ``undo_ms``: undoing that change;
* ``stall_ms``: the longest the event loop was busy at one time during the 0.5 s after a key (the delayed outline
  recolour, the panels' redraw, the autosave thread's GIL share), max over the repeats.

Region mode also checks that the image layer stayed lazy and that the cells outside the region are still in the
saved sidecar after the changes. Prints one JSON object (and writes it to ``--out``).
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


def settle(widget, app, seconds: float = 0.5) -> float:
    """Between key presses a person takes far longer than the autosave write and the panels' delayed redraw;
    let both finish so each timing is one key press on an idle viewer. Returns the longest single busy stretch of
    the event loop meanwhile (ms): what a person would feel as a stall."""
    longest = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        app.processEvents()
        longest = max(longest, time.perf_counter() - t)
        time.sleep(0.005)
    widget.session.saver.flush()
    app.processEvents()
    return 1000 * longest


def select(display, ids: np.ndarray) -> None:
    """A rubber-band selection of ``ids`` (through the display when it knows how, else the markers' indices)."""
    if hasattr(display, "select_ids"):
        display.select_ids(ids)
    else:
        display.markers.selected_data = set(display.table.positions(ids).tolist())


def write_slide(path: Path, side: int) -> None:
    """A flat ``side``-sided RGB tiled TIFF with faint stripes, written tile by tile (never whole in memory)."""
    import tifffile

    tile = np.full((512, 512, 3), 225, np.uint8)
    tile[::37, :, 0] = 180
    count = (-(-side // 512)) ** 2
    tifffile.imwrite(path, (tile for _ in range(count)), shape=(side, side, 3), dtype=np.uint8, tile=(512, 512),
                     photometric="rgb", compression="zlib", compressionargs={"level": 1})


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--selection", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--side", type=int, default=None, help="field side (default 4000; region side in --region)")
    parser.add_argument("--region", action="store_true", help="a region of a lazy whole-slide TIFF")
    parser.add_argument("--slide", type=int, default=40_000, help="side of the synthetic slide in --region")
    parser.add_argument("--outside", type=int, default=None, help="cells outside the region (default cells/10)")
    parser.add_argument("--shapes", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the open and the key presses into "
                        "PROFILE.open / PROFILE.key (pstats files)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bloodcell-scale-"))
    os.environ["BLOODCELL_HOME"] = str(work / "home")

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_bloodcell.core.io.images import png_bytes
    from napari_bloodcell.core.io.records import AnnotationSet, ImageRecord
    from napari_bloodcell.core.review_project import ReviewProject, import_predictions
    from napari_bloodcell.gui.review_display import ReviewDisplay, canvas_size, viewer_camera
    from napari_bloodcell.gui.widgets.review import ReviewWidget

    rng = np.random.default_rng(0)
    n = args.cells
    side = args.side or (10_000 if args.region else 4000)
    t = time.perf_counter()
    if args.region:
        width = height = args.slide
        y0 = x0 = (args.slide - side) // 2
        region = (y0, y0 + side, x0, x0 + side)
        path = work / "slide.tif"
        write_slide(path, args.slide)
        n_out = n // 10 if args.outside is None else args.outside
        xy_in = rng.uniform(0, side - 40, (n, 2)) + [x0, y0]
        xy_out = rng.uniform(0, args.slide - 40, (4 * n_out + 10, 2))
        wh_out = rng.uniform(12, 36, (len(xy_out), 2))
        centre = xy_out + wh_out / 2
        outside = ~((centre[:, 0] >= x0) & (centre[:, 0] < x0 + side) & (centre[:, 1] >= y0)
                    & (centre[:, 1] < y0 + side))
        xy = np.vstack([xy_in, xy_out[outside][:n_out]])
        wh = np.vstack([rng.uniform(12, 36, (n, 2)), wh_out[outside][:n_out]])
    else:
        width = height = side
        region, n_out = None, 0
        field = np.full((side, side, 3), 225, np.uint8)
        field[::37, :, 0] = 180
        path = work / "crowded_field.png"
        path.write_bytes(png_bytes(field))
        xy = rng.uniform(0, side - 40, (n, 2))
    total = len(xy)
    if not args.region:
        wh = rng.uniform(12, 36, (total, 2))
    rec = ImageRecord(path.name, width, height, boxes=np.hstack([xy, xy + wh]), labels=rng.integers(0, 3, total),
                      scores=rng.uniform(0.05, 1, total), sources=["bench:model"] * total,
                      reviews=["unreviewed"] * total, path=path)
    classes = ["RBC", "WBC", "Platelets"]
    import_predictions(ReviewProject(work / "project"), AnnotationSet(classes, [rec]))
    setup_s = time.perf_counter() - t

    app = QApplication.instance() or QApplication([])
    viewer = napari.Viewer(show=True)
    viewer.open(str(path), plugin="napari-bloodcell")
    app.processEvents()
    image_layer = viewer.layers[-1]
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Review cells")
    widget.project_edit.setText(str(work / "project"))
    widget.reviewer_edit.setText("bench")
    if region is not None:
        widget.set_region(region)
    app.processEvents()

    import cProfile

    profiles = {"open": cProfile.Profile(), "key": cProfile.Profile()}
    t = time.perf_counter()
    with profiles["open"] if args.profile else _nothing():
        widget.start()
        app.processEvents()
    open_s = time.perf_counter() - t
    assert widget.session is not None, widget.cell_label.text()
    table, display = widget.session.table, widget.session.display
    assert len(table) == n, (len(table), widget.cell_label.text())
    open_stall = settle(widget, app)
    # the reviewer zooms out to about twice the selection's cells in view and rubber-bands among them
    boxes = table.col("box")
    lo, hi = boxes[:, :2].min(0), boxes[:, 2:].max(0)
    view_side = float(np.sqrt((hi - lo).prod() * 2 * args.selection / n))
    camera = viewer_camera(viewer)
    camera.center = tuple(((lo + hi) / 2)[::-1])
    camera.zoom = min(canvas_size(viewer)) / view_side
    settle(widget, app)
    cy, cx = camera.center[-2:]
    half = min(canvas_size(viewer)) / camera.zoom / 2
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    in_view = table.ids[(np.abs(centre[:, 0] - cx) < half) & (np.abs(centre[:, 1] - cy) < half)]
    assert len(in_view) >= args.selection, len(in_view)

    changes, undos, stalls = [], [], []
    for k in range(args.repeat):
        picks = rng.choice(in_view, args.selection, replace=False)
        select(display, picks)
        settle(widget, app)
        t = time.perf_counter()
        with profiles["key"] if args.profile else _nothing():
            widget.assign((k % 2) + 1)
            app.processEvents()
        changes.append(1000 * (time.perf_counter() - t))
        assert (table.col("label")[table.positions(picks)] == (k % 2) + 1).all()
        stalls.append(settle(widget, app))
        t = time.perf_counter()
        widget.undo()
        app.processEvents()
        undos.append(1000 * (time.perf_counter() - t))
        stalls.append(settle(widget, app))
    # one change kept, so the saved sidecar holds a region edit beside the untouched cells outside it
    kept = rng.choice(in_view, args.selection, replace=False)
    select(display, kept)
    widget.assign(2)
    settle(widget, app)
    widget.session.saver.flush()
    result = {
        "mode": "region" if region else "field", "cells": n, "selection": args.selection,
        "field": f"{width}x{height}", "region": list(region) if region else None, "cells_outside": n_out,
        "setup_s": round(setup_s, 1), "open_s": round(open_s, 3), "open_stall_ms": round(open_stall, 1),
        "class_change_ms": round(statistics.median(changes), 1), "class_change_ms_all": [round(c, 1) for c in changes],
        "undo_ms": round(statistics.median(undos), 1), "undo_ms_all": [round(c, 1) for c in undos],
        "stall_ms": round(max(stalls), 1), "cells_in_view": len(in_view),
        "cells_drawn": len(display.visible.positions) if hasattr(display, "visible") else n,
        "cpu_count": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    sidecar = widget.session.saver.path
    widget.close_session()
    saved = ReviewProject(work / "project").load(sidecar.stem)[0]
    result["sidecar_mb"] = round(sum(p.stat().st_size for p in sidecar.parent.glob(sidecar.stem + "*")) / 1e6, 2)
    assert len(saved) == total, (len(saved), total)
    assert (saved.col("label")[saved.positions(kept)] == 2).all()
    if region:
        data = image_layer.data
        result["image_layer_lazy"] = bool(hasattr(data, "dask") or getattr(image_layer, "multiscale", False))
        assert result["image_layer_lazy"], type(data)

    if args.shapes if args.shapes is not None else n <= 20_000:
        from napari_bloodcell.core.boxes import xyxy_to_napari

        t = time.perf_counter()
        extra = ReviewDisplay(viewer, saved, "again", lambda: "bench", lambda: 0)
        app.processEvents()
        result["display_only_s"] = round(time.perf_counter() - t, 3)
        extra.close()
        t = time.perf_counter()
        viewer.add_shapes(list(xyxy_to_napari(saved.col("box"))), shape_type="rectangle", edge_color="yellow",
                          face_color="transparent", name="shapes comparison")
        app.processEvents()
        result["shapes_s"] = round(time.perf_counter() - t, 3)
    if args.profile:
        for name, prof in profiles.items():
            prof.dump_stats(f"{args.profile}.{name}")
    text = json.dumps(result)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    viewer.close()


if __name__ == "__main__":
    main()
