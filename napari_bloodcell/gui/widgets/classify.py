"""Plugins ▸ Classify cells: type the boxes of a Shapes layer (all, or the selected ones) in the background.

A thin widget over :func:`napari_bloodcell.core.inference.classify.classify_job`. Each typed box gets its class,
and in its features the ``margin`` (top probability minus the runner-up) and, in the ``attributes`` JSON, every
class's probability and the classifier's id; a review started on the layer then puts the smallest margins first.
Cancel stops at the next batch and changes nothing. Without a classifier (a fresh install) the button is disabled
and the widget says where to get one.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
)

from .jobs import CHECKPOINT, JobControls, JobFailed, _devices, checkpoint_problem, registry_choices

if TYPE_CHECKING:
    import napari

ALL_BOXES = "(every box)"


def classifier_choices(_=None) -> list[tuple[str, str]]:
    """The registry's active classifier, recent classifier files, a file."""
    return registry_choices("classifier")


class ClassifyWidget(JobControls, Container):
    title = "Classify cells"
    unit = "cell"
    needs_model = True

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True, scrollable=True)
        self.viewer = viewer
        self.boxes = ComboBox(label="boxes", choices=self._shape_layers, nullable=True)
        self.image = ComboBox(label="image", choices=self._image_layers, nullable=True)
        self.model = ComboBox(label="classifier", choices=classifier_choices)
        self.checkpoint = FileEdit(label="checkpoint", filter="*.pt *.pth", visible=self.model.value == CHECKPOINT)
        self.target = ComboBox(label="type boxes of", choices=self._target_choices)
        self.selected_only = CheckBox(text="selected boxes only", value=False)
        self.margin = FloatSpinBox(label="uncertain below", value=0.3, min=0.0, max=1.0, step=0.05,
                                   tooltip="cells whose margin (top minus second probability) is below this are "
                                           "counted as uncertain; the review shows them first")
        self.device = ComboBox(label="device", choices=_devices(), value="auto")
        controls = self.job_widgets("Classify")
        self.counts = Label(label="types", value="—")
        self.extend([self.boxes, self.image, self.model, self.checkpoint, self.target, self.selected_only,
                     self.margin, self.device, *controls,
                     self.counts])
        self.model.changed.connect(self._model_changed)
        self.checkpoint.changed.connect(self.update_ready)
        self.boxes.changed.connect(lambda _: self.target.reset_choices())
        self.wire_job_controls()
        self.fit_narrow()
        self._refresh()
        self.update_ready()

    def run_problem(self) -> str | None:
        problem = checkpoint_problem(str(self.model.value), self.checkpoint.value, "classifier")
        if problem is None:
            return None
        if problem == "no classifier":
            return ("No classifier yet. Train one in Review ▸ Retrain (from reviewed cells) or with `bloodcell train "
                    "classifier …`, register one with `bloodcell models add FILE --task classifier --activate` (the "
                    "active one is then chosen here), or choose its .pt file above.")
        return f"{problem}: choose the classifier's .pt file above"

    # ------------------------------------------------------------------------------------------------ choices
    def _shape_layers(self, _=None) -> list[Any]:
        from napari.layers import Shapes

        return [layer for layer in self.viewer.layers if isinstance(layer, Shapes)]

    def _image_layers(self, _=None) -> list[Any]:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _target_choices(self, _=None) -> list[str]:
        layer = self.boxes.value if hasattr(self, "boxes") else None
        if layer is None or "class" not in layer.features:
            return [ALL_BOXES]
        present = [str(c) for c in dict.fromkeys(layer.features["class"].astype(str))]
        return [*present, ALL_BOXES]

    def _refresh(self, _event=None) -> None:
        for combo in (self.boxes, self.image):
            combo.reset_choices()
            if combo.value is None and combo.choices:
                combo.value = combo.choices[-1]
        self.target.reset_choices()
        if "WBC" in self.target.choices:
            self.target.value = "WBC"

    def model_spec(self) -> str:
        return str(self.checkpoint.value) if self.model.value == CHECKPOINT else str(self.model.value)

    # ---------------------------------------------------------------------------------------------------- run
    def chosen_indices(self, layer) -> np.ndarray:
        n = len(layer.data)
        chosen = np.zeros(n, dtype=bool)
        if self.selected_only.value:
            chosen[list(layer.selected_data)] = True
        else:
            chosen[:] = True
        if self.target.value != ALL_BOXES and "class" in layer.features:
            chosen &= layer.features["class"].astype(str).to_numpy() == self.target.value
        return np.flatnonzero(chosen)

    def run(self) -> None:
        from napari.utils.notifications import show_error

        from napari_bloodcell.core.boxes import napari_to_xyxy
        from napari_bloodcell.core.inference.classify import classify_job

        if (problem := self.run_problem()) is not None:
            show_error(f"Classify cells: {problem}")
            return
        layer, image = self.boxes.value, self.image.value
        if layer is None or image is None:
            show_error("Classify cells: open an image and its boxes first (Detect cells makes both)")
            return
        if image.ndim != 2 or np.asarray(layer.data[0] if len(layer.data) else np.zeros((4, 2))).shape[-1] != 2:
            show_error("Classify cells: works on one 2D field (its boxes without a plane index); open one image")
            return
        indices = self.chosen_indices(layer)
        if not len(indices):
            show_error(f"Classify cells: no box to classify ({'no selection' if self.selected_only.value else ''}"
                       f" of class {self.target.value})".replace("( ", "("))
            return
        boxes, _ = napari_to_xyxy([layer.data[i] for i in indices])
        pixels = np.asarray(image.data)
        job = classify_job(self.model_spec(), pixels, boxes, str(self.device.value))
        self.counts.value = "—"  # the previous run's types are not this run's
        self.start_job(job, lambda result: self._on_done(result, layer, indices),
                       f"classifying {len(indices)} cell(s)…")

    def _on_done(self, result: Any, layer, indices: np.ndarray) -> None:
        from napari_bloodcell.gui.layers import set_box_classification

        if isinstance(result, JobFailed):
            self._on_error(result.message)
            return
        pred, res = result
        names = [pred.classes[int(k)] for k in res.labels] if not res.multilabel else None
        attrs = []
        for j in range(len(indices)):
            a = res.attributes(j)
            a["classified_by"] = pred.model_id
            attrs.append(a)
        set_box_classification(layer, indices, names, attrs, res.margin, list(pred.classes))
        uncertain = int((res.margin < self.margin.value).sum())
        if res.multilabel:
            counts = Counter(f for flags in res.flags for f in flags)
        else:
            counts = Counter(names)
        self.counts.value = "\n".join(f"{c}: {counts.get(c, 0)}" for c in pred.classes)
        self.status.value = (f"{len(indices)} cell(s) typed by {pred.model_id.split('@')[0]}; {uncertain} uncertain "
                             f"(margin < {self.margin.value:.2f}); {res.ms_per_cell:.0f} ms/cell")

