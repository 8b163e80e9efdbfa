"""Screenshots of detect-and-classify on a BCCD smear, reviewed: typed white cells, the least certain first, and
the white-cell differential before and after a correction.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python tools/screenshot_classify.py \
        --classifier WBC_CLASSIFIER.pt [--detector DETECTOR.pt] [--image BCCD_IMAGE] [--retype CLASS]

Both models are registered as the active ones in a scratch ``BLOODCELL_HOME``; Plugins ▸ Detect cells runs with
"then classify" set to the active classifier; the review starts on the result (classify-review.png), the least certain
white cell is retyped with its number key (to ``--retype``: the type wbc_types gives the image), and the
differential is shot again (classify-corrected.png). The default field, BloodImage_00274, is an eosinophil in
wbc_types and in the validation split of the classifier the docs used.
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
    parser.add_argument("--image", type=Path, default=BCCD / "JPEGImages" / "BloodImage_00274.jpg")
    parser.add_argument("--detector", default="classical")
    parser.add_argument("--classifier", required=True)
    parser.add_argument("--score", type=float, default=0.3, help="detector score threshold")
    parser.add_argument("--retype", help="the correct type of the least certain cell (default: its runner-up)")
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
    detect.classifier.value = next(c for c in detect.classifier.choices if c)
    detect.score.value = args.score
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
    import numpy as np

    typed = [int(i) for i in table.queue() if np.isfinite(table.object_info(int(i))["margin"])]
    first = typed[0]  # the least certain typed white cell
    review.go_to(first)
    pump(app, 1.0)  # let the docks settle: the canvas's final size decides the fit
    viewer.reset_view()
    pump(app, 1.0)
    viewer.screenshot(str(OUT / "classify-review.png"), canvas_only=False)
    info = table.object_info(first)
    runner_up = args.retype or sorted(info["attributes"]["class_probabilities"].items(), key=lambda kv: -kv[1])[1][0]
    print("least certain typed cell:", info["class"], "margin", round(info["margin"], 3), "->", runner_up)
    viewer.window._qt_viewer.canvas._key_map_handler.press_key(str(table.classes.index(runner_up) + 1))
    review.go_to(first)
    pump(app, 1.0)  # let the docks settle: the canvas's final size decides the fit
    viewer.reset_view()
    pump(app, 1.0)
    viewer.screenshot(str(OUT / "classify-corrected.png"), canvas_only=False)
    d = review.differential.diff
    print("after:", table.object_info(first)["class"], [(r.name, r.count) for r in d.rows])
    review.close_session()
    viewer.close()


if __name__ == "__main__":
    main()
