"""Screenshots of Plugins ▸ Detect cells on a BCCD smear (or the synthetic sample without ../shared/data):
one while the job runs (progress bar, viewer still drawing), one with the result.

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python tools/screenshot_detect.py [--model classical]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def main() -> None:
    import napari

    from napari_bloodcell.gui.widgets.detect import CHECKPOINT, DetectWidget

    parser = argparse.ArgumentParser()
    parser.add_argument("--image", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/data/bccd/JPEGImages/BloodImage_00012.jpg")
    parser.add_argument("--model", default="classical", help="classical or a checkpoint .pt")
    parser.add_argument("--name", default="detect", help="screenshots are NAME-running.png and NAME-result.png")
    args = parser.parse_args()
    image = args.image if args.image.is_file() else Path(__file__).resolve().parents[1] / "sample_data/smear/JPEGImages/smear_0000.png"
    viewer = napari.Viewer(title="napari-bloodcell")
    viewer.open(str(image), plugin="napari-bloodcell")
    widget = DetectWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Detect cells", area="right")
    viewer.window._qt_window.resize(1400, 860)
    app = napari.qt.get_qapp()
    app.processEvents()
    viewer.reset_view()
    if args.model == "classical":
        widget.model.value = "classical"
    else:
        widget.model.value = CHECKPOINT
        widget.checkpoint.value = args.model
    if args.model == "classical":
        widget.tile.value = 256  # several tiles, so the progress bar is seen moving (a deep model keeps auto:
        # its tiles must match the field size it was trained on, or cells change scale)
    widget.run()
    frames = 0
    while widget.worker is not None:
        viewer.camera.zoom *= 1.002  # the canvas keeps redrawing while the job runs
        app.processEvents()
        frames += 1
        if frames == 3:
            viewer.screenshot(str(OUT / f"{args.name}-running.png"), canvas_only=False)
        time.sleep(0.02)
    print(f"{frames} redraws while detecting; {widget.status.value}; {widget.counts.value}")
    viewer.reset_view()
    app.processEvents()
    viewer.screenshot(str(OUT / f"{args.name}-result.png"), canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main()
