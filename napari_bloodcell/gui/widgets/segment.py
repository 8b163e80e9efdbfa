"""Plugins ▸ Segment volume: segment an MRI volume in the background, correct it, export it, retrain from it.

A thin widget over :func:`napari_bloodcell.core.inference.segment3d.segment_job`. The result is a Labels layer with
the volume's scale, translate and affine (so it lies on the image, and saving it with the plugin's writer gives a
NIfTI on the image's grid); napari's own brush, fill and eraser correct it. The per-label volumes in mm³ follow
every stroke and every undo/redo. The worker builds the Labels layer and its first volumes, so the viewer only
adds it. Below, the training panel exports the corrected label map with its image into a versioned
segmentation dataset and retrains the registry's segmenter from it, as the Review widget does for cells.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    Select,
    SpinBox,
)

from .jobs import CHECKPOINT, JobControls, JobFailed, _devices, checkpoint_problem, registry_choices

if TYPE_CHECKING:
    import napari

    from ..layer_data import ReadyLayer


def segmenter_choices(_=None) -> list[tuple[str, str]]:
    """The registry's active segmenter, recent segmenter files, a file."""
    return registry_choices("segmenter")


def layer_affine(layer) -> np.ndarray:
    """The voxel → world affine of a 3D layer: the NIfTI one it was read with, else its scale and translate."""
    from napari_bloodcell.core.io.nifti import affine_from_scale_translate

    meta = layer.metadata or {}
    if meta.get("affine") is not None and list(meta.get("shape", layer.data.shape[:3])) == list(layer.data.shape[:3]):
        return np.asarray(meta["affine"], dtype=np.float64)
    return affine_from_scale_translate(tuple(layer.scale), tuple(layer.translate))


class SegmentWidget(JobControls, Container):
    title = "Segment volume"
    unit = "window"
    needs_model = True

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True, scrollable=True)
        self.viewer = viewer
        self.volume = ComboBox(label="volume", choices=self._volume_layers, nullable=True)
        self.more_channels = Select(label="more channels", choices=self._other_volumes,
                                    tooltip="for models trained on several modalities (e.g. T1 + T2): the other "
                                            "channels, in training order")
        self.model = ComboBox(label="segmenter", choices=segmenter_choices)
        self.checkpoint = FileEdit(label="checkpoint", filter="*.pt *.pth", visible=self.model.value == CHECKPOINT)
        self.patch = SpinBox(label="patch (voxels)", value=0, min=0, max=512,
                             tooltip="window size; 0 = the size the model was trained with")
        self.overlap = FloatSpinBox(label="overlap", value=0.5, min=0.0, max=0.9, step=0.05,
                                    tooltip="fraction of a window shared with its neighbours")
        self.blend = ComboBox(label="blending", choices=["gaussian", "average"], value="gaussian")
        self.largest = CheckBox(text="keep each label's largest piece", value=False,
                                tooltip="drop stray islands of a label (for structures that are one piece)")
        self.device = ComboBox(label="device", choices=_devices(), value="auto")
        controls = self.job_widgets("Segment")
        self.labels_layer = ComboBox(label="label map", choices=self._label_layers, nullable=True)
        self.volumes = Label(label="volumes", value="—")
        self.extend([self.volume, self.more_channels, self.model, self.checkpoint, self.patch, self.overlap,
                     self.blend, self.largest, self.device, *controls,
                     self.labels_layer, self.volumes])
        self.more_channels.native.setMaximumHeight(60)
        self.model.changed.connect(self._model_changed)
        self.checkpoint.changed.connect(self.update_ready)
        self.volume.changed.connect(lambda _: self.more_channels.reset_choices())
        self.labels_layer.changed.connect(self._watch_labels)
        self.wire_job_controls()
        self._watched = None
        self._seen: tuple | None = None
        self._volumes_known: tuple[Any, str] | None = None
        self._volumes_pending = False
        self._add_training_panel()
        self.fit_narrow()
        self._refresh()
        self.update_ready()

    def run_problem(self) -> str | None:
        problem = checkpoint_problem(str(self.model.value), self.checkpoint.value, "segmenter")
        if problem is None:
            return None
        if problem == "no segmenter":
            return ("No segmenter yet. Train one with the Retrain panel below (export a corrected label map first) or "
                    "`bloodcell train segmenter …`, register one with `bloodcell models add FILE --task segmenter "
                    "--activate` (the active one is then chosen here), or choose its .pt file above.")
        return f"{problem}: choose the segmenter's .pt file above"

    def _add_training_panel(self) -> None:
        import getpass

        from .review_retrain import RetrainPanel

        self.training = RetrainPanel(self._export, getpass.getuser, tasks=("segmenter",), dataset="volumes",
                                     export_text="Export to dataset",)
        self.content.layout().addWidget(self.training)
        self.training.status_changed = None

    # ------------------------------------------------------------------------------------------------ choices
    def _volume_layers(self, _=None) -> list[Any]:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image) and layer.ndim == 3]

    def _other_volumes(self, _=None) -> list[Any]:
        chosen = self.volume.value if hasattr(self, "volume") else None
        return [layer for layer in self._volume_layers() if layer is not chosen]

    def _label_layers(self, _=None) -> list[Any]:
        from napari.layers import Labels

        return [layer for layer in self.viewer.layers if isinstance(layer, Labels) and layer.ndim == 3]

    def _refresh(self, _event=None) -> None:
        for combo in (self.volume, self.labels_layer):
            combo.reset_choices()
            if combo.value is None and combo.choices:
                combo.value = combo.choices[-1]
        self.more_channels.reset_choices()
        self.more_channels.visible = bool(self.more_channels.choices)  # only when there is a second volume

    def model_spec(self) -> str:
        return str(self.checkpoint.value) if self.model.value == CHECKPOINT else str(self.model.value)

    # ---------------------------------------------------------------------------------------------------- run
    def run(self) -> None:
        from napari.utils.notifications import show_error

        from ..layer_data import then, unique_name

        if (problem := self.run_problem()) is not None:
            show_error(f"Segment volume: {problem}")
            return
        layer = self.volume.value
        if layer is None:
            show_error("Segment volume: open a 3D volume first (File ▸ Open, a .nii or .nii.gz)")
            return
        extra = [x for x in self.more_channels.value if x is not layer]
        bad = [x.name for x in extra if x.data.shape != layer.data.shape]
        if bad:
            show_error(f"Segment volume: {bad[0]} has shape {self._shape_of(bad[0])}, the volume "
                       f"{tuple(layer.data.shape)}; channels must share the voxel grid")
            return
        channels = [x.data for x in [layer, *extra]]
        spacing = tuple(float(s) for s in (layer.metadata or {}).get("spacing", layer.scale))
        patch = (self.patch.value,) * 3 if self.patch.value else None
        job = _segment_channels(self.model_spec(), channels, spacing, str(self.device.value), patch,
                                self.overlap.value, str(self.blend.value), self.largest.value)
        source = {"name": layer.name, "affine": layer_affine(layer).tolist(), "scale": tuple(layer.scale),
                  "translate": tuple(layer.translate), "units": layer.units,
                  "path": (layer.metadata or {}).get("path"),
                  "name_taken": unique_name(self.viewer, f"{layer.name} segmentation")}
        self.start_job(then(job, lambda result: _result_layer(result, source)), self._on_done,
                       f"segmenting {layer.name}…")

    def _shape_of(self, name: str) -> tuple[int, ...]:
        return tuple(self.viewer.layers[name].data.shape)

    def _on_done(self, result: tuple[ReadyLayer, str] | JobFailed) -> None:
        """Add the Labels layer the worker built (in steps), and show its volumes, computed there too."""
        from ..layer_data import add_in_steps

        if isinstance(result, JobFailed):
            self._on_error(result.message)
            return
        ready, status = result
        self._volumes_known = (ready.layer, ready.summary)  # picked up when the label-map picker takes the layer
        add_in_steps(self.viewer, ready.layer)
        self.labels_layer.reset_choices()
        self.labels_layer.value = ready.layer
        self.status.value = status

    # -------------------------------------------------------------------------------------------- volumes
    def _watch_labels(self, layer) -> None:
        """Follow the chosen label map: a stroke (``paint``), new data (``data``), and undo/redo, which napari 0.9
        announces only as a re-slice (``set_data``) after writing the voxels back."""
        if self._watched is not None:
            for event, slot in self._watched_events(self._watched):
                event.disconnect(slot)
        self._watched = layer
        if layer is not None:
            for event, slot in self._watched_events(layer):
                event.connect(slot)
        known = self._volumes_known
        if known is not None and known[0] is layer:  # computed by the worker with the layer
            self.volumes.value = known[1]
            self._seen = self._edit_state(layer)
        else:
            self.update_volumes()
        self._volumes_known = None

    def _watched_events(self, layer) -> list[tuple[Any, Any]]:
        return [(layer.events.data, self._volumes_soon), (layer.events.paint, self._volumes_soon),
                (layer.events.set_data, self._maybe_edited)]

    @staticmethod
    def _edit_state(layer) -> tuple:
        """What changes when the voxels change through napari (paint, fill, undo, redo, new data), and not when
        the view is merely re-sliced (scrolling through planes)."""
        return (id(layer.data), len(getattr(layer, "_undo_history", ())), len(getattr(layer, "_redo_history", ())))

    def _maybe_edited(self, _event=None) -> None:
        if self._watched is not None and self._edit_state(self._watched) != self._seen:
            self._volumes_soon()

    def _volumes_soon(self, _event=None) -> None:
        """After the event (napari announces a paint while it is still writing the stroke into the data), once
        however many events came in the same turn."""
        from qtpy.QtCore import QTimer

        if not self._volumes_pending:
            self._volumes_pending = True
            QTimer.singleShot(0, self.update_volumes)

    def update_volumes(self, _event=None) -> None:
        from ..layer_data import volume_text

        self._volumes_pending = False
        layer = self.labels_layer.value
        if layer is None:
            self.volumes.value = "—"
            return
        names = {int(k): v for k, v in ((layer.metadata or {}).get("label_names") or {}).items()}
        spacing = tuple(float(s) for s in (layer.metadata or {}).get("spacing", layer.scale))
        self._seen = self._edit_state(layer)
        self.volumes.value = volume_text(np.asarray(layer.data), spacing, names)

    # --------------------------------------------------------------------------------------------- export
    def export_items(self):
        """The chosen label map with its image: the image's own NIfTI file when the layer came from one."""
        from napari_bloodcell.core.errors import BloodcellInputError
        from napari_bloodcell.core.export_volumes import VolumeExportItem

        labels = self.labels_layer.value
        if labels is None:
            raise BloodcellInputError("no label map to export: segment a volume or open its label map first")
        meta = labels.metadata or {}
        source = meta.get("source_image")
        image = self.viewer.layers[source] if source in self.viewer.layers else self.volume.value
        if image is None or image.data.shape != labels.data.shape:
            raise BloodcellInputError(f"no open volume has the label map's shape {tuple(labels.data.shape)}")
        path = meta.get("source_path") or (image.metadata or {}).get("path")
        names = {int(k): v for k, v in (meta.get("label_names") or {}).items()}
        return [VolumeExportItem(image.name, np.asarray(labels.data), layer_affine(image),
                                 image_file=Path(path) if path else None,
                                 image=None if path else np.asarray(image.data), label_names=names,
                                 source=meta.get("segmented_by", "napari"))]

    def _export(self, dataset: Path, _views: list[str]) -> None:
        from napari.utils.notifications import show_error, show_info

        from napari_bloodcell.core.errors import BloodcellInputError
        from napari_bloodcell.core.export_volumes import export_segmentation
        from napari_bloodcell.core.progress import drain

        try:
            result = drain(export_segmentation(self.export_items(), dataset, by=self.training.reviewer()))
        except BloodcellInputError as exc:
            show_error(f"Export: {exc}")
            self.training._say(f"export failed: {exc}")
            return
        text = (f"dataset {result.dataset.name} version {result.version}: {result.cases} case(s); added "
                f"{len(result.added)}, replaced {len(result.replaced)}")
        self.training._say(text)
        show_info(text)


def _segment_channels(model: str, channels: list[Any], spacing: tuple[float, ...], device: str,
                      patch: tuple[int, int, int] | None, overlap: float, blend: str, largest: bool):
    """The job, in the worker: stack the channels (a copy of the volume, kept off the viewer's thread), segment."""
    from napari_bloodcell.core.inference.segment3d import segment_job

    image = np.stack([np.asarray(c) for c in channels])
    return (yield from segment_job(model, image, spacing, device, patch, overlap, blend, largest_only=largest))


def _result_layer(result: tuple[Any, Any], source: dict[str, Any]) -> tuple[ReadyLayer, str]:
    """In the worker: the label map as a Labels layer on the image's grid, its volumes, and the status line."""
    from napari_bloodcell.core.inference.segment3d import model_label

    from ..layer_data import labels_layer

    seg, res = result
    meta = {"affine": source["affine"], "spacing": [float(s) for s in source["scale"]],
            "shape": list(res.labels.shape), "path": None, "source_image": source["name"],
            "source_path": source["path"], "segmented_by": model_label(seg),
            "label_names": {str(k): v for k, v in seg.label_names.items()}}
    ready = labels_layer(res.labels, source["name_taken"], meta,
                         {"scale": source["scale"], "translate": source["translate"], "units": source["units"]})
    note = f"; {res.warnings[0]}" if res.warnings else ""
    status = (f"{res.windows} window(s) in {res.seconds:.1f} s by {model_label(seg).split('@')[0]}; "
              f"correct it with the brush (P), fill (F) and eraser (E){note}")
    return ready, status
