"""Does the window fit a laptop screen with the plugin's widgets docked? Measures and screenshots it.

    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python tools/screen_fit.py --screen 1366x768 \
        --out docs/images/screen-1366x768.png [--widgets detect,review | --widgets all]

The window is maximised on the virtual screen (as on a laptop), the widgets docked through napari's plugin
menu, the sample smear's review started, and then the window's size, the canvas's width and the share of the
width the canvas keeps are printed. The target (issue 14): the window does not grow beyond the screen, and the
canvas keeps at least 55% of the width.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

WIDGETS = {"detect": "Detect cells", "review": "Review cells", "classify": "Classify cells",
           "segment": "Segment volume"}


def settle(app, seconds: float = 0.5) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def main() -> int:
    import getpass
    import tempfile

    import napari

    parser = argparse.ArgumentParser()
    parser.add_argument("--screen", default="1366x768", help="the screen's WIDTHxHEIGHT (as given to Xvfb)")
    parser.add_argument("--widgets", default="detect,review", help="comma-separated, or 'all'")
    parser.add_argument("--out", type=Path, help="PNG of the whole window")
    parser.add_argument("--launcher", action="store_true",
                        help="lay out as `bloodcell view --review` does (napari's layer controls hidden)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.screen.lower().split("x"))
    names = list(WIDGETS) if args.widgets == "all" else args.widgets.split(",")

    app = napari.qt.get_qapp()
    viewer = napari.Viewer(title="napari-bloodcell")
    window = viewer.window._qt_window
    window.resize(width, height - 40)  # a taskbar's worth less than the screen
    viewer.open_sample("napari-bloodcell", "smear")
    docked = {}
    for k, name in enumerate(names):
        _, widget = viewer.window.add_plugin_dock_widget("napari-bloodcell", WIDGETS[name], tabify=k > 0)
        docked[name] = widget
    if "review" in docked:
        review = docked["review"]
        review.detect_and_start(reviewer=getpass.getuser(), project=Path(tempfile.mkdtemp()) / "project")
        end = time.monotonic() + 300
        while review.worker is not None and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.02)
    if "review" in docked:  # the review's tab in front, as after `bloodcell view --review`
        dock = docked["review"].parent()
        while dock is not None and not hasattr(dock, "raise_"):
            dock = dock.parent()
        if dock is not None:
            dock.raise_()
    settle(app)
    if args.launcher and "review" in docked:
        docked["review"].fit_laptop_screen()
        settle(app)
    canvas = viewer.window._qt_viewer.canvas.native
    share = canvas.width() / window.width()
    fits = window.width() <= width and window.height() <= height
    print(f"screen {width}x{height}; widgets {', '.join(names)}: window {window.width()}x{window.height()} "
          f"({'fits' if fits else 'GROWN PAST THE SCREEN'}), canvas {canvas.width()}x{canvas.height()} "
          f"= {share:.0%} of the width ({'ok' if share >= 0.55 else 'below 55%'})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(args.out), canvas_only=False)
        print(f"saved {args.out}")
    if "review" in docked:
        docked["review"].close_session()
    viewer.close()
    return 0 if fits and share >= 0.55 else 1


if __name__ == "__main__":
    raise SystemExit(main())
