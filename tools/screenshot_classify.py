"""Screenshots of detect-and-classify on a BCCD smear, reviewed: typed white cells, the least certain first, and
the white-cell differential before and after a correction.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python tools/screenshot_classify.py \
        --classifier WBC_CLASSIFIER.pt [--detector DETECTOR.pt] [--image BCCD_IMAGE]

Both models are registered as the active ones in a scratch ``BLOODCELL_HOME``; Plugins ▸ Detect cells runs with
"then classify" set to the active classifier; the review starts on the result (classify-review.png), the current
(least certain) white cell is retyped with its number key, and the differential is shot again
(classify-corrected.png).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
BCCD = ROOT.parent / "shared" / "data" / "bccd"


def pump(app, seconds: float = 0.5) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", type=Path, default=BCCD / "JPEGImages" / "BloodImage_00113.jpg")
    parser.add_argument("--detector", default="classical")
    parser.add_argument("--classifier", required=True)
    parser.add_argument("--retype", default="LYMPHOCYTE", help="class given to the first cell of the queue")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bloodcell-shot-"))
    os.environ["BLOODCELL_HOME"] = str(home)

    import napari

    from napari_bloodcell.core.models.registry import ModelRegistry
    from napari_bloodcell.gui.widgets.detect import CHECKPOINT, DetectWidget
    from napari_bloodcell.gui.widgets.review import ReviewWidget

    registry = ModelRegistry()
    registry.add(args.classifier, "classifier", activate=True, by="screenshot")
    app = napari.qt.get_qapp()
    viewer = napari.Viewer(title="napari-bloodcell")
    viewer.window._qt_window.resize(1560, 980)
    viewer.open(str(args.image), plugin="napari-bloodcell")
    detect = DetectWidget(viewer)
    viewer.window.add_dock_widget(detect, name="Detect cells", area="right")
    if args.detector != "classical":
        detect.model.value = CHECKPOINT
        detect.checkpoint.value = args.detector
    detect.classifier.value = [c for c in detect.classifier.choices if c][0]
    detect.score.value = 0.3
    detect.run()
    while detect.worker is not None:
        app.processEvents()
        time.sleep(0.02)
    print(detect.status.value, "|", detect.counts.value.replace("\n", ", "))

    review = ReviewWidget(viewer)
    viewer.window.add_dock_widget(review, name="Review cells", area="right", tabify=True)
    review.project_edit.setText(str(home / "reviews" / "bccd"))
    review.reviewer_edit.setText("Dr. Reviewer")
    review.boxes_combo.setCurrentText(detect.last_layer.name)
    review.start()
    table = review.session.table
    pump(app, 1.0)
    viewer.screenshot(str(OUT / "classify-review.png"), canvas_only=False)
    first = review.session.display.current
    print("first in queue:", table.object_info(first)["class"], "margin", round(table.object_info(first)["margin"], 3))
    key = str(table.classes.index(args.retype) + 1)
    viewer.window._qt_viewer.canvas._key_map_handler.press_key(key)
    review.go_to(first)
    pump(app, 1.0)
    viewer.screenshot(str(OUT / "classify-corrected.png"), canvas_only=False)
    d = review.differential.diff
    print("after:", table.object_info(first)["class"], [(r.name, r.count) for r in d.rows])
    review.close_session()
    viewer.close()


if __name__ == "__main__":
    main()
