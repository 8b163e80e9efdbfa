"""Screenshots of Plugins ▸ Review cells on a BCCD smear while a retraining runs in the background.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python tools/screenshot_review.py [--model CHECKPOINT]

The field is detected (with the checkpoint, registered as the active detector, or the classical detector), a few
cells are reviewed with the keys, three more BCCD fields with their ground truth join the review project, the
project is exported as a dataset, and retraining starts; while it runs, the viewer is panned and zoomed and two
screenshots are taken: the gallery and differential (review-retraining.png) and the training plot
(review-retrain-plot.png). The retraining is then cancelled, which leaves the active model as it was.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", type=Path, default=BCCD / "JPEGImages" / "BloodImage_00012.jpg")
    parser.add_argument("--model", default="classical")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bloodcell-shot-"))
    os.environ["BLOODCELL_HOME"] = str(home)

    import napari

    from napari_bloodcell.core.io.formats import read_annotations
    from napari_bloodcell.core.models.checkpoints import load_checkpoint
    from napari_bloodcell.core.models.registry import ModelRegistry
    from napari_bloodcell.core.review_project import import_predictions
    from napari_bloodcell.gui.review_display import viewer_camera
    from napari_bloodcell.gui.widgets.detect import CHECKPOINT, DetectWidget
    from napari_bloodcell.gui.widgets.review import ReviewWidget

    registry = ModelRegistry(home / "registry")
    if args.model != "classical":
        ckpt = load_checkpoint(args.model)
        registry.add(args.model, "detector", metrics=dict(ckpt["val_metrics"]), activate=True, by="screenshot",
                     extra={"arch": ckpt["arch"], "classes": list(ckpt["classes"])})
    app = napari.qt.get_qapp()
    viewer = napari.Viewer(title="napari-bloodcell")
    viewer.window._qt_window.resize(1560, 980)
    viewer.open(str(args.image), plugin="napari-bloodcell")
    detect = DetectWidget(viewer)
    if args.model != "classical":
        detect.model.value = CHECKPOINT
        detect.checkpoint.value = args.model
    detect.score.value = 0.3
    detect.run()
    while detect.worker is not None:
        app.processEvents()
        time.sleep(0.02)

    review = ReviewWidget(viewer)
    viewer.window.add_dock_widget(review, name="Review cells", area="right")
    review.project_edit.setText(str(home / "reviews" / "bccd"))
    review.reviewer_edit.setText("Dr. Reviewer")
    review.boxes_combo.setCurrentText(detect.last_layer.name)
    review.start()
    table = review.session.table
    for key in ("A", "A", "2", "A", "A", "A", "1", "A"):
        viewer.window._qt_viewer.canvas._key_map_handler.press_key(key)
        app.processEvents()
    others = read_annotations(BCCD)
    keep = [r for r in others.images if r.stem in ("BloodImage_00001", "BloodImage_00003", "BloodImage_00004")]
    from dataclasses import replace

    import_predictions(review.session.project, replace(others, images=keep), review_default="accepted")
    panel = review.training
    panel.dataset.setText(str(home / "datasets" / "bccd"))
    panel.registry.setText(str(registry.folder))
    panel.epochs.setValue(20)
    worker = review.export(Path(panel.dataset.text()))
    while worker is not None and not (Path(panel.dataset.text()) / "dataset.json").is_file():
        app.processEvents()
        time.sleep(0.05)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.05)
    panel.start()
    t0 = time.monotonic()
    while panel.running and len(panel.losses) < 4 and time.monotonic() - t0 < 300:
        viewer_camera(viewer).zoom *= 1.001  # the viewer keeps drawing while the training process works
        app.processEvents()
        time.sleep(0.05)
    print(f"{len(panel.losses)} training iterations seen; {panel.status.text()}")
    viewer.reset_view()
    review.tabs.setCurrentWidget(review.gallery)
    for _ in range(10):
        app.processEvents()
        time.sleep(0.05)
    viewer.screenshot(str(OUT / "review-retraining.png"), canvas_only=False)
    review.tabs.setCurrentIndex(1)
    review.tabs.widget(1).ensureWidgetVisible(panel.canvas)
    for _ in range(10):
        app.processEvents()
        time.sleep(0.05)
    viewer.screenshot(str(OUT / "review-retrain-plot.png"), canvas_only=False)
    panel.cancel()
    while panel.running:
        app.processEvents()
        time.sleep(0.05)
    active = registry.active()
    print(f"after cancel: {panel.status.text()}; active detector {active['id'] if active else None}; "
          f"{len(table)} cells, differential total {review.differential.diff.total}")
    review.close_session()
    viewer.close()


if __name__ == "__main__":
    main()
