"""Screenshots of the Review widget's Case tab and case differential on a laptop-sized window (1366×768).

    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python tools/screenshot_case.py

Six real BCCD fields join a case with their VOC boxes as cells to review (synthetic smears when ../shared/data/bccd
is absent); the window is laid out as ``bloodcell view --review`` does. The first field is reviewed and signed, the
second half reviewed, the analyser's WBC count entered, and the case moved on with N; then the Case tab
(docs/images/case_panel.png) and the Count tab with the case differential (docs/images/case_panel_count.png) are
saved. Prints the window's and canvas's sizes so a layout that outgrows the screen is noticed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
BCCD = ROOT.parent / "shared" / "data" / "bccd"
STEMS = ["BloodImage_00000", "BloodImage_00002", "BloodImage_00003", "BloodImage_00004", "BloodImage_00005",
         "BloodImage_00007"]
REVIEWER = "Dr. Reviewer"


def settle(app, seconds: float = 0.5) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def wait(app, condition, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise SystemExit("timed out waiting for the case panel")
        app.processEvents()
        time.sleep(0.01)


def make_case(home: Path) -> tuple[Path, str]:
    """The review project and the case name: BCCD fields with their boxes, or synthetic smears."""
    from napari_bloodcell.core.cases import Case
    from napari_bloodcell.core.review_project import ReviewProject

    project = ReviewProject(home / "reviews" / "slides")
    if (BCCD / "JPEGImages").is_dir():
        from napari_bloodcell.core.io.formats import read_annotations

        name, aset = "BCCD slide 1", read_annotations(BCCD)
        paths = [BCCD / "JPEGImages" / f"{stem}.jpg" for stem in STEMS]
    else:
        from napari_bloodcell.core.io.images import png_bytes
        from napari_bloodcell.core.io.records import AnnotationSet, ImageRecord
        from napari_bloodcell.core.synthetic.smear import generate_smear

        name, records, paths = "synthetic slide", [], []
        for k in range(6):
            smear = generate_smear(seed=k)
            path = home / "slide" / f"field_{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png_bytes(smear.image))
            h, w = smear.image.shape[:2]
            records.append(ImageRecord(path.name, w, h, boxes=smear.boxes, labels=smear.labels, path=path))
            paths.append(path)
        aset = AnnotationSet(list(smear.classes), records)
    Case.create(project, name, by=REVIEWER).add_images(paths, annotations=aset, review_default="unreviewed")
    return project.folder, name


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="bloodcell-case-shot-"))
    os.environ["BLOODCELL_HOME"] = str(home)
    folder, name = make_case(home)

    import napari

    app = napari.qt.get_qapp()
    viewer = napari.Viewer(title="napari-bloodcell")
    window = viewer.window._qt_window
    window.resize(1366, 728)  # a taskbar's worth less than the screen
    _, review = viewer.window.add_plugin_dock_widget("napari-bloodcell", "Review cells")
    review.project_edit.setText(str(folder))
    review.reviewer_edit.setText(REVIEWER)
    panel = review.case_panel
    panel.refresh_names()
    review.tabs.setCurrentIndex(review.tabs.count() - 1)

    def ready() -> bool:
        return panel.busy == 0 and review.session is not None and panel.live == panel.wanted

    panel.open_case(name)
    wait(app, ready)
    review.fit_laptop_screen()
    for k, share in ((0, 1.0), (1, 0.5)):  # one field reviewed and signed, one half reviewed
        panel.open_field(k)
        wait(app, ready)
        table = review.session.table
        ids = table.ids[: int(len(table) * share)]
        table.set_review(ids, "accepted", by=REVIEWER)
        if share == 1.0:
            review.sign()
    panel.count.wbc.setValue(7.2)
    review.next()  # the case queue: the next cell to look at, in whichever field it is
    wait(app, ready)
    settle(app, 1.0)
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in window.findChildren(NapariQtNotification):  # pop-ups would cover the canvas
        toast.close()
    settle(app, 0.5)
    canvas = viewer.window._qt_viewer.canvas.native
    print(f"window {window.width()}x{window.height()}, canvas {canvas.width()}x{canvas.height()} "
          f"({canvas.width() / window.width():.0%} of the width), dock {review.width()} px")
    OUT.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(OUT / "case_panel.png"), canvas_only=False)
    review.tabs.setCurrentIndex(2)  # Count: the case differential above the field's own
    settle(app, 1.0)
    viewer.screenshot(str(OUT / "case_panel_count.png"), canvas_only=False)
    print(f"saved {OUT / 'case_panel.png'} and {OUT / 'case_panel_count.png'}; {panel.status.text()}")
    panel.close_case()
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
