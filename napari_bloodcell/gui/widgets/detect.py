"""Plugins ▸ Detect cells: run a detector on an image layer in the background and add its boxes for review.

A thin widget over :func:`napari_bloodcell.core.inference.detect.detect_job`: the job runs in napari's
``thread_worker`` (the viewer keeps drawing), reports per-tile progress, and Cancel stops it at the next tile,
leaving the layers exactly as they were (the Shapes layer is added only when the job returns).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    SpinBox,
)

from .jobs import CHECKPOINT, JobControls, JobFailed, _devices, registry_choices

if TYPE_CHECKING:
    import napari

NO_CLASSIFIER = "(detect only)"


class DetectWidget(JobControls, Container):
    title = "Detect cells"

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
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
        self.extend([self.image, self.model, self.checkpoint, self.classifier, self.score, self.nms, self.device, self.tile,
                     *controls, self.counts])
        self.model.changed.connect(self._model_changed)
        self.wire_job_controls()
        self.last_layer = None
        self._refresh()

    # ------------------------------------------------------------------------------------------------ choices
    def _image_layers(self, _=None) -> list[Any]:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _model_choices(self, _=None) -> list[tuple[str, str]]:
        """classical, the registry's active detector, recent files, a file."""
        return registry_choices("detector", (("classical", "classical"),))

    def _classifier_choices(self, _=None) -> list[tuple[str, str]]:
        from .classify import classifier_choices

        return [(NO_CLASSIFIER, "")] + [c for c in classifier_choices() if c[1] != CHECKPOINT]

    def _refresh(self, _event=None) -> None:
        self.image.reset_choices()
        if self.image.value is None and self.image.choices:
            self.image.value = self.image.choices[-1]

    def _model_changed(self, value: str) -> None:
        self.checkpoint.visible = value == CHECKPOINT

    def model_spec(self) -> str:
        if self.model.value == CHECKPOINT:
            return str(self.checkpoint.value)
        return str(self.model.value)

    # ---------------------------------------------------------------------------------------------------- run
    def _current_field(self, layer) -> tuple[Any, int | None]:
        """The 2D field shown: the layer itself, or the current plane of a stack (and its index). A large lazy
        (dask) field stays lazy: the job reads it tile by tile in the worker, never whole in the viewer's thread."""
        from napari_bloodcell.core.io.lazy_images import lazy_pixels

        plane = None if layer.ndim == 2 else int(self.viewer.dims.current_step[0])
        data = layer.data if plane is None else layer.data[plane]
        if hasattr(data, "dask") and data.shape[0] * data.shape[1] > lazy_pixels():
            return data, plane
        return np.asarray(data), plane

    def run(self) -> None:
        from napari.utils.notifications import show_error

        from napari_bloodcell.core.inference.detect import detect_job

        layer = self.image.value
        if layer is None:
            show_error("Detect cells: open an image first (File ▸ Open, or File ▸ Open Sample ▸ Blood Cell Review)")
            return
        try:
            field, plane = self._current_field(layer)
        except Exception as exc:  # a lazy plane that cannot be read: say so, keep the viewer alive
            show_error(f"Detect cells: could not read the image of layer {layer.name!r}: {exc}")
            return
        tile = int(self.tile.value) or None
        args = (field, float(self.score.value), float(self.nms.value), str(self.device.value), tile)
        if self.classifier.value:
            from napari_bloodcell.core.inference.classify import detect_classify_job

            def job_on_pixels(detector: str, classifier: str):  # crops need pixels: read a lazy field in the worker
                return (yield from detect_classify_job(detector, classifier, np.asarray(field), *args[1:]))

            job = job_on_pixels(self.model_spec(), self.classifier.value)
        else:
            job = detect_job(self.model_spec(), *args)
        size = field.shape[:2]
        self.start_job(job, lambda result: self._on_done(result, layer, plane, size), "starting…")

    def _on_progress(self, item: Any) -> None:
        if isinstance(item, tuple):
            done, total = item
            self.progress.max = max(total, 1)
            self.progress.value = done
            self.status.value = f"tile {done}/{total}"
        else:
            self.status.value = str(item)

    def _on_done(self, result: tuple[list[str], str, Any], image_layer, plane: int | None,
                 size: tuple[int, int]) -> None:
        from napari_bloodcell.core.inference.detect import detections_record
        from napari_bloodcell.core.io.records import AnnotationSet, ImageRecord
        from napari_bloodcell.gui.layers import shapes_layer

        if isinstance(result, JobFailed):
            self._on_error(result.message)
            return
        classes, model_id, found = result
        h, w = size  # the field detected on; not read again (a lazy plane would be loaded twice)
        path = image_layer.source.path
        name = Path(path).name if path else image_layer.name
        if isinstance(found, ImageRecord):  # detected and classified
            rec = dataclasses.replace(found, file_name=name)
        else:
            rec = detections_record(name, w, h, found, model_id)
        if plane is None:
            aset = AnnotationSet(classes, [rec], format="napari")
        else:
            n = image_layer.data.shape[0]
            records = [ImageRecord(f"plane_{k}", w, h) for k in range(n)]
            records[plane] = rec
            aset = AnnotationSet(classes, records, format="napari")
        data, kwargs, _ = shapes_layer(aset, f"{image_layer.name} cells ({model_id.split('@')[0]})",
                                       stacked=plane is not None, source=model_id)
        kwargs["scale"] = image_layer.scale[: kwargs["ndim"]]
        kwargs["translate"] = image_layer.translate[: kwargs["ndim"]]
        self.last_layer = self.viewer.add_shapes(data, **kwargs)
        counts = Counter(classes[i] for i in rec.labels.tolist())
        total = sum(counts.values())
        self.counts.value = "\n".join(f"{c}: {counts.get(c, 0)}" for c in classes) + f"\ntotal: {total}"
        self.status.value = f"{total} cells from {model_id}"
