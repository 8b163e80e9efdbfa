"""Plugins ▸ Detect cells: run a detector on an image layer in the background and add its boxes for review.

A thin widget over :func:`napari_bloodcell.core.inference.detect.detect_job`: the job runs in napari's
``thread_worker`` (the viewer keeps drawing), reports per-tile progress, and Cancel stops it at the next tile,
leaving the layers exactly as they were (the Shapes layer is added only when the job returns). The worker also
builds the Shapes layer (features, colours, text; see :mod:`..layer_data`), so the viewer only adds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...core.progress import Progress

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    SpinBox,
)

from .jobs import CHECKPOINT, JobControls, JobFailed, _devices, checkpoint_problem, registry_choices

if TYPE_CHECKING:
    import napari

    from ..layer_data import ReadyLayer

NO_CLASSIFIER = "(detect only)"


class DetectWidget(JobControls, Container):
    title = "Detect cells"

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True, scrollable=True)
        self.viewer = viewer
        self.image = ComboBox(label="image", choices=self._image_layers, nullable=True)
        self.model = ComboBox(label="model", choices=self._model_choices)
        if len(self.model.choices) > 2 and "active detector" in self.model.native.itemText(1):
            self.model.value = self.model.choices[1]  # the registry's active model is the one to use
        self.checkpoint = FileEdit(label="checkpoint", filter="*.pt *.pth", visible=False)
        self.classifier = ComboBox(label="then classify", choices=self._classifier_choices,
                                   tooltip="type the detected cells (e.g. white-cell types) in the same step")
        self.score = FloatSpinBox(label="score ≥", value=0.3, min=0.0, max=1.0, step=0.05)
        self.nms = FloatSpinBox(label="NMS IoU", value=0.5, min=0.05, max=1.0, step=0.05)
        self.device = ComboBox(label="device", choices=_devices(), value="auto")
        self.tile = SpinBox(label="tile (0 auto)", value=0, min=0, max=16384, step=256,
                            tooltip="tile side in pixels for large scans; 0 tiles only fields far above the "
                                    "model's training size")
        controls = self.job_widgets("Detect")
        self.counts = Label(label="counts", value="—")
        self.extend([self.image, self.model, self.checkpoint, self.classifier, self.score, self.nms, self.device,
                     self.tile, *controls, self.counts])
        self.model.changed.connect(self._model_changed)
        self.checkpoint.changed.connect(self.update_ready)
        self.wire_job_controls()
        self.fit_narrow()
        self.last_layer = None
        self._refresh()
        self.update_ready()

    # ------------------------------------------------------------------------------------------------ choices
    def _image_layers(self, _=None) -> list[Any]:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _model_choices(self, _=None) -> list[tuple[str, str]]:
        """The registry's active detector, the bundled starter detector, classical, recent files, a file: the
        first is what a job uses by default (``bloodcell detect --model auto`` picks the same)."""
        from ...core.models.bundled import bundled_for

        choices = registry_choices("detector")
        active = [c for c in choices if c[0].startswith("active ")]
        bundled = bundled_for("detector")
        shipped = [(bundled.label, "bundled")] if bundled else []
        return [*active, *shipped, ("classical", "classical"), *[c for c in choices if c not in active]]

    def _classifier_choices(self, _=None) -> list[tuple[str, str]]:
        from .classify import classifier_choices

        return [(NO_CLASSIFIER, "")] + [c for c in classifier_choices() if c[1] != CHECKPOINT]

    def _refresh(self, _event=None) -> None:
        self.image.reset_choices()
        if self.image.value is None and self.image.choices:
            self.image.value = self.image.choices[-1]

    def run_problem(self) -> str | None:
        problem = checkpoint_problem(str(self.model.value), self.checkpoint.value, "detector")
        if problem is None:
            return None
        return (f"{problem}: choose the detector's .pt file above, or pick classical (no model needed); train one "
                "with `bloodcell train detector …` or in Review ▸ Retrain")

    def model_spec(self) -> str:
        if self.model.value == CHECKPOINT:
            return str(self.checkpoint.value)
        return str(self.model.value)

    # ---------------------------------------------------------------------------------------------------- run
    def _current_field(self, layer) -> tuple[Any, int | None]:
        """The 2D field shown: the layer itself, or the current plane of a stack (and its index), not yet read:
        the worker reads it (whole, or tile by tile when it is a large lazy scan), never the viewer's thread. A
        multiscale layer (a whole slide) is detected on its full-resolution level, tile by tile."""
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        plane = None if layer.ndim == 2 else int(self.viewer.dims.current_step[0])
        return (data if plane is None else data[plane]), plane

    def run(self) -> None:
        from napari.utils.notifications import show_error

        from ..layer_data import DetectionTarget, detection_layer, file_name_of, then

        if (problem := self.run_problem()) is not None:
            show_error(f"Detect cells: {problem}")
            return
        layer = self.image.value
        if layer is None:
            show_error("Detect cells: open an image first (File ▸ Open, or File ▸ Open Sample ▸ Blood Cell "
                       "Review)")
            return
        field, plane = self._current_field(layer)
        target = DetectionTarget(file_name_of(layer), layer.name, tuple(field.shape[:2]), plane,
                                 int(field_stack_depth(layer)) if plane is not None else 1,
                                 tuple(float(s) for s in layer.scale), tuple(float(t) for t in layer.translate))
        job = _detect_field(field, self.model_spec(), self.classifier.value or None, float(self.score.value),
                            float(self.nms.value), str(self.device.value), int(self.tile.value) or None,
                            bool(getattr(layer, "multiscale", False)))
        self.counts.value = "—"  # the previous run's counts are not this run's
        self.start_job(then(job, lambda result: detection_layer(result, target)), self._on_done, "starting…")

    def _on_progress(self, item: Progress) -> None:
        if item.total:
            self.progress.max = max(item.total, 1)
            self.progress.value = item.step
            self.status.value = f"tile {item.step}/{item.total}"
        else:
            self.status.value = item.text()

    def _on_done(self, result: ReadyLayer | JobFailed) -> None:
        """Add the layer the worker built, in steps (see :func:`..layer_data.add_in_steps`)."""
        from ..layer_data import add_in_steps

        if isinstance(result, JobFailed):
            self._on_error(result.message)
            return
        self.last_layer = result.layer
        add_in_steps(self.viewer, result.layer)
        self.counts.value = result.summary
        self.status.value = result.status


def field_stack_depth(layer) -> int:
    """Planes in a stack layer (level 0's first axis for a multiscale one)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return int(data.shape[0])


def _detect_field(field: Any, detector: str, classifier: str | None, score: float, nms: float, device: str,
                  tile: int | None, multiscale: bool = False):
    """The job, in the worker: read the field (a large lazy scan, or any level 0 of a slide, stays lazy and is
    detected tile by tile; crops for a classifier need its pixels), detect, and type the cells when a classifier
    is chosen."""
    from napari_bloodcell.core.errors import BloodcellInputError
    from napari_bloodcell.core.inference.detect import detect_job
    from napari_bloodcell.core.io.lazy_images import lazy_pixels

    large = field.shape[0] * field.shape[1] > lazy_pixels()
    if multiscale and not isinstance(field, np.ndarray) and not hasattr(field, "dask"):
        import dask.array as da  # another reader's level 0 (a zarr array, ...): read it tile by tile too

        field = da.from_array(field, chunks=getattr(field, "chunks", "auto"))
    lazy = hasattr(field, "dask") and (large or multiscale)
    if lazy and classifier and multiscale and large:
        raise BloodcellInputError("typing cells needs the whole field in memory, too much for a whole slide: detect "
                                  "with '(detect only)', then type the cells of regions with Classify cells")
    try:
        pixels = field if lazy and not classifier else np.asarray(field)
    except (OSError, ValueError) as exc:  # a lazy plane that cannot be read: said in the widget, not raised
        raise BloodcellInputError(f"could not read the image: {exc}") from exc
    if classifier:
        from napari_bloodcell.core.inference.classify import detect_classify_job

        return (yield from detect_classify_job(detector, classifier, pixels, score, nms, device, tile))
    return (yield from detect_job(detector, pixels, score, nms, device, tile))
