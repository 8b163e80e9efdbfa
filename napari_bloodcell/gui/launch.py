"""Open the viewer ready to review: Detect cells and Review cells docked, the field detected and its review started.

Used by ``bloodcell view --review`` (the README's first command): the whole loop on the bundled sample without a
click, so a new user sees what the plugin is for.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import napari

    from .widgets.review import ReviewWidget


def start_review(viewer: napari.Viewer, reviewer: str = "", project: Path | None = None,
                 timeout_s: float = 300.0) -> ReviewWidget:
    """Dock both widgets, detect the last image layer with the classical detector and start its review."""
    import time

    from napari.qt import get_qapp

    from .widgets.detect import DetectWidget
    from .widgets.review import ReviewWidget

    detect = DetectWidget(viewer)
    viewer.window.add_dock_widget(detect, name="Detect cells", area="right")
    review = ReviewWidget(viewer)
    viewer.window.add_dock_widget(review, name="Review cells", area="right", tabify=True)
    if reviewer:
        review.reviewer_edit.setText(reviewer)
    if project is not None:
        review.project_edit.setText(str(project))
    if detect.image.value is None:
        return review
    for layer in viewer.layers:  # the sample's ground truth stays available but out of the way
        if layer._type_string == "shapes":
            layer.visible = False
    detect.score.value = 0.1
    detect.run()
    app, end = get_qapp(), time.monotonic() + timeout_s
    while detect.worker is not None and time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)
    if detect.last_layer is not None:
        review.image_combo.setCurrentText(detect.image.value.name)
        review.boxes_combo.setCurrentText(detect.last_layer.name)
        review.start()
    return review
