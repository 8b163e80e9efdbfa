"""How the Case panel copes with a slide's worth of fields: open a case of 50 fields × 100 cells, switch fields.

    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python benchmarks/case_scale.py [--fields 50] [--cells 100] \
        [--switches 20]

A review project gets N synthetic smear fields (``core.synthetic.smear``, 640×480 PNG), each with M model cells
(random white-cell types, red cells and platelets, random scores, all unreviewed) in its sidecar, and one case of
them. On a shown viewer with the Review widget docked, measured:

* ``open_s``: *Open* on the case until its first field is on screen: every sidecar read, the fields' states, the
  case-wide queue and the case statistics (in a worker), then the field list, the case differential and the first
  field (its image read in a worker, shown in the image layer, its review opened on the case's least certain
  cell), with Qt's pending events processed (the drawing included);
* ``reopen_s``: the same after closing the case, in the same napari (its first-use costs, such as vispy's font
  atlas for the first caption, already paid);
* ``switch_ms``: PageDown (pressed through napari's key handler, as a person does) until the next field's review
  is open and drawn: the previous review closed (its autosave handed to a thread), the image read off the main
  thread and put in the reused layer, the review layers refilled, gallery, counts and field list updated;
* ``*_main_thread_cpu_*``: the main thread's own CPU time in the same spans (on a busy shared machine the
  wall-clock times also hold the time the thread waited for a core);
* the event loop's largest gap (and 99th percentile) over all the switches, measured as in
  ``benchmarks/event_loop_gaps.py`` (a 10 ms precise timer; the watchdog names the code of gaps over 50 ms).

Prints one JSON object; docs/benchmarks.md ("Case review scale") has the numbers measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

CLASSES = ["neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil", "RBC", "Platelets"]


def build_case(work: Path, fields: int, cells: int) -> Path:
    """The project folder holding case ``bench`` of ``fields`` synthetic fields with ``cells`` cells each."""
    from napari_bloodcell.core.annotations import AnnotationTable
    from napari_bloodcell.core.cases import Case
    from napari_bloodcell.core.io.images import png_bytes
    from napari_bloodcell.core.review_project import ReviewProject, image_digest, image_key
    from napari_bloodcell.core.synthetic.smear import generate_smear

    project = ReviewProject(work / "project")
    rng = np.random.default_rng(0)
    paths = []
    for k in range(fields):
        smear = generate_smear(seed=k)
        path = work / "slide" / f"field_{k:03d}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(png_bytes(smear.image))
        h, w = smear.image.shape[:2]
        xy = rng.uniform(0, [w - 40, h - 40], (cells, 2))
        boxes = np.hstack([xy, xy + rng.uniform(12, 36, (cells, 2))])
        labels = rng.choice(len(CLASSES), cells, p=[0.1, 0.06, 0.02, 0.01, 0.01, 0.7, 0.1])
        table = AnnotationTable(CLASSES)
        table.add(boxes, labels, "bench:model", scores=rng.uniform(0.05, 1, cells), review="unreviewed")
        table.undo_stack.clear()
        table.revision = 0
        digest = image_digest(path)
        project.save(image_key(path.name, digest), table,
                     {"file_name": path.name, "width": w, "height": h, "path": str(path), "digest": digest})
        paths.append(path)
    Case.create(project, "bench", by="bench").add_images(paths)
    return project.folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fields", type=int, default=50)
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--tab", choices=["case", "gallery"], default="case",
                        help="the tab shown while switching: gallery adds the case-wide gallery's refresh")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bloodcell-case-scale-"))
    os.environ["BLOODCELL_HOME"] = str(work / "home")
    t = time.perf_counter()
    folder = build_case(work, args.fields, args.cells)
    build_s = time.perf_counter() - t

    import napari
    from event_loop_gaps import Monitor, spin, spin_until

    from napari_bloodcell.gui.widgets.review import ReviewWidget

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1366, 728)
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Review cells")
    widget.project_edit.setText(str(folder))
    widget.reviewer_edit.setText("bench")
    panel = widget.case_panel
    panel.refresh_names()
    widget.tabs.setCurrentIndex(widget.tabs.count() - 1)  # the Case tab, as a reviewer moving through fields
    spin(0.5)
    monitor = Monitor()

    def ready() -> bool:
        return panel.busy == 0 and widget.session is not None and panel.live == panel.wanted

    with monitor.measure("open") as opening:
        t, cpu = time.perf_counter(), time.thread_time()
        panel.open_case("bench")
        spin_until(ready, 60)
        napari.qt.get_qapp().processEvents()
        open_s, open_cpu_s = time.perf_counter() - t, time.thread_time() - cpu
        spin(0.5)
    assert len(panel.data.fields) == args.fields and len(widget.session.table) == args.cells
    if args.tab == "gallery":  # the Gallery tab, spanning the case: every switch refreshes it
        from napari_bloodcell.gui.widgets.review import GALLERY_TAB

        widget.tabs.setCurrentIndex(GALLERY_TAB)
        spin_until(lambda: not panel.gallery._reading, 60)
        spin(0.5)

    handler = viewer.window._qt_viewer.canvas._key_map_handler
    switches, switch_cpu = [], []
    with monitor.measure("switch") as switching:
        step = 1
        for _ in range(args.switches):
            if not 0 <= panel.data.index(panel.live) + step < args.fields:
                step = -step  # back and forth through the case
            key = "PageDown" if step > 0 else "PageUp"
            before = panel.live
            t, cpu = time.perf_counter(), time.thread_time()
            handler.press_key(key)
            try:
                spin_until(lambda: ready() and panel.live != before, 30)
            except TimeoutError:
                raise SystemExit(f"{key} did not open a field: {panel.status.text()}") from None
            napari.qt.get_qapp().processEvents()
            switches.append(1000 * (time.perf_counter() - t))
            switch_cpu.append(1000 * (time.thread_time() - cpu))
            spin(0.3)  # a person looks at the field before moving on
    widget.flush_closed()
    panel.close_case()  # and open it again: napari's first-use costs (fonts, layer types) now paid
    spin(0.5)
    t = time.perf_counter()
    panel.open_case("bench")
    spin_until(ready, 60)
    napari.qt.get_qapp().processEvents()
    reopen_s = time.perf_counter() - t
    monitor.close()
    gaps = switching.gaps()
    open_gaps = opening.gaps()
    print(json.dumps({
        "fields": args.fields, "cells_per_field": args.cells, "tab": args.tab, "build_s": round(build_s, 1),
        "open_s": round(open_s, 3), "open_main_thread_cpu_s": round(open_cpu_s, 3),
        "open_max_gap_ms": round(float(open_gaps.max()), 1),
        "reopen_s": round(reopen_s, 3),
        "switch_ms": round(statistics.median(switches), 1), "switch_ms_max": round(max(switches), 1),
        "switch_main_thread_cpu_ms": round(statistics.median(switch_cpu), 1),
        "switch_ms_all": [round(s, 1) for s in switches],
        "switch_max_gap_ms": round(float(gaps.max()), 1), "switch_p99_gap_ms": round(float(np.percentile(gaps, 99)), 1),
        "switch_gap_causes": switching.worst_causes(3), "open_gap_causes": opening.worst_causes(3),
        "cpu_count": os.cpu_count(), "load_average": [round(v, 2) for v in os.getloadavg()],
    }))
    panel.close_case()
    viewer.close()


if __name__ == "__main__":
    main()
