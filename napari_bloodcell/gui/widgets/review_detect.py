"""*Detect now* for the Review widget: detect the field in the background and open the detections for review.

The detections go straight into the annotation table, never through a Shapes layer, so a crowded field opens as
fast as the review display allows (a Shapes layer of 10,000 boxes alone takes about 2 s to build). The worker also
builds that table, so the viewer's thread only opens it (issue 14: the viewer must not stall).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ...core.progress import Progress

if TYPE_CHECKING:
    from ...core.annotations import AnnotationTable
    from .review import Field, ReviewWidget

REVIEW_SCORE = 0.15
"""Score floor for boxes to review: low enough that doubtful cells reach the queue instead of being dropped."""


def review_detector() -> tuple[str, str]:
    """The registry's active detector, else the bundled starter detector, else the classical one; and the words
    that say which."""
    from ...core.models.bundled import default_model

    choice = default_model("detector")
    return choice.model, choice.label


def review_classifier() -> str | None:
    """The registry's active classifier, if any: detect-now then types the cells in the same step."""
    from ...core.models.registry import ModelRegistry

    active = ModelRegistry().active_file("classifier")
    return str(active[1]) if active else None


def table_of_detections(result: tuple[list[str], str, Any], image: dict[str, Any]) -> AnnotationTable:
    """In the worker: the detections (typed, when a classifier ran) as the annotation table to review."""
    from ...core.annotations import AnnotationTable
    from ...core.inference.detect import detections_record
    from ...core.io.records import ImageRecord

    classes, model_id, found = result
    if isinstance(found, ImageRecord):
        record = dataclasses.replace(found, file_name=image["file_name"])
    else:
        record = detections_record(image["file_name"], image["width"], image["height"], found, model_id)
    return AnnotationTable.from_record(record, classes)


def detect_for_review(field: Field, widget: ReviewWidget):
    """Start the detection (and classification) worker; on success the widget opens the cells for review."""
    from napari.qt.threading import thread_worker

    from ..layer_data import then
    from .jobs import JobFailed, _reporting_errors

    (model, label), classifier = review_detector(), review_classifier()
    widget.start_button.setEnabled(False)
    widget.cell_label.setText(f"detecting with {label}…")
    doing = {"classify": "classifying cells", "detect": "detecting"}

    def progress(item: Progress) -> None:
        what = doing.get(item.stage, "detecting")
        text = f"{what}: {item.step} of {item.total}" if item.total else f"{what}: {item.message}"
        if widget.cell_label.text() != text:
            widget.cell_label.setText(text)

    def done(result: Any) -> None:
        if isinstance(result, JobFailed):
            widget._error(result.message)
            return
        widget._open(field, result, restored=False)

    def finished() -> None:
        widget.worker = None
        widget.start_button.setEnabled(True)

    if classifier:
        from ...core.inference.classify import detect_classify_job

        job = detect_classify_job(model, classifier, field.pixels, score=REVIEW_SCORE)
    else:
        from ...core.inference.detect import detect_job

        job = detect_job(model, field.pixels, score=REVIEW_SCORE)
    image = dict(field.image)
    worker = thread_worker(_reporting_errors, ignore_errors=True, start_thread=False)(
        then(job, lambda result: table_of_detections(result, image)))
    worker.yielded.connect(progress)
    worker.returned.connect(done)
    worker.errored.connect(lambda exc: widget._error(f"detection failed: {exc}"))
    worker.finished.connect(finished)
    worker.start()
    return worker
