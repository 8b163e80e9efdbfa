"""A job's result made ready for napari in the worker thread, and added to the viewer without stalling it.

The viewer must never stop answering for long (issue 14: the end of a detection blocked napari's event loop for
177-462 ms). So the worker, after the computation, also builds what the main thread would otherwise build: the
record, the features table (the first ``import pandas`` alone took 121 ms), colours, text and the napari layer
object itself (a layer is a plain model; only adding it to a viewer touches Qt and OpenGL). The main thread is left
with :func:`add_in_steps`, which spreads napari's own work over several event-loop turns. What remains is napari's:
see the event-loop section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np


@dataclasses.dataclass
class ReadyLayer:
    """A napari layer built off the main thread, with the text the widget shows next to it."""

    layer: Any
    summary: str
    status: str


def then(job: Generator, prepare: Callable[[Any], Any]) -> Generator:
    """Run ``job``, then ``prepare(result)`` in the same (worker) thread; a failure value passes through."""
    from .widgets.jobs import JobFailed

    result = yield from job
    if isinstance(result, JobFailed):
        return result
    warm_up()
    return prepare(result)


def warm_up() -> None:
    """First-use costs of napari's drawing that need no OpenGL, paid here rather than in the viewer's thread:
    vispy's dash patterns (a process-wide cache, about 100 ms the first time; every Labels layer draws a dashed
    polygon overlay) and the modules napari loads to build layers (pandas for features)."""
    import pandas  # noqa: F401
    from vispy.visuals.line.dash_atlas import DashAtlas

    DashAtlas()


@dataclasses.dataclass
class DetectionTarget:
    """Where detections go, read from the image layer on the main thread before the job starts."""

    file_name: str
    layer_name: str
    size: tuple[int, int]
    plane: int | None
    planes: int
    scale: tuple[float, ...]
    translate: tuple[float, ...]


def detection_layer(result: tuple[list[str], str, Any], target: DetectionTarget) -> ReadyLayer:
    """Detections (or detections typed by a classifier) as a Shapes layer with features, colours and text."""
    from napari.layers import Shapes

    from ..core.inference.detect import detections_record
    from ..core.io.records import AnnotationSet, ImageRecord
    from .layers import shapes_layer

    classes, model_id, found = result
    h, w = target.size
    if isinstance(found, ImageRecord):  # detected and classified
        rec = dataclasses.replace(found, file_name=target.file_name)
    else:
        rec = detections_record(target.file_name, w, h, found, model_id)
    if target.plane is None:
        records = [rec]
    else:
        records = [ImageRecord(f"plane_{k}", w, h) for k in range(target.planes)]
        records[target.plane] = rec
    aset = AnnotationSet(classes, records, format="napari")
    data, kwargs, _ = shapes_layer(aset, f"{target.layer_name} cells ({model_id.split('@')[0]})",
                                   stacked=target.plane is not None, source=model_id)
    kwargs["scale"] = target.scale[: kwargs["ndim"]]
    kwargs["translate"] = target.translate[: kwargs["ndim"]]
    layer = Shapes(data, **kwargs)
    counts = Counter(classes[i] for i in rec.labels.tolist())
    total = sum(counts.values())
    summary = "\n".join(f"{c}: {counts.get(c, 0)}" for c in classes) + f"\ntotal: {total}"
    return ReadyLayer(layer, summary, f"{total} cells from {model_id}")


def volume_text(labels: np.ndarray, spacing: tuple[float, ...], names: dict[int, str]) -> str:
    """The per-label volumes line of the Segment widget."""
    from ..core.segmentation_metrics import label_volumes

    rows = label_volumes(labels, spacing, names)
    lines = [f"{r['name']}: {r['mm3']:,.0f} mm³ ({r['voxels']:,} voxels)" for r in rows]
    return "\n".join(lines) or "no labelled voxels"


def labels_layer(labels: np.ndarray, name: str, meta: dict[str, Any], common: dict[str, Any]) -> ReadyLayer:
    """A label map as a Labels layer, with its volumes text computed here rather than in the viewer."""
    from napari.layers import Labels

    layer = Labels(labels, name=name, metadata=meta, opacity=0.5, **common)
    names = {int(k): v for k, v in (meta.get("label_names") or {}).items()}
    spacing = tuple(float(s) for s in meta.get("spacing", common.get("scale", (1.0,) * labels.ndim)))
    return ReadyLayer(layer, volume_text(labels, spacing, names), "")


def unique_name(viewer: Any, name: str) -> str:
    """``name``, or ``name 2``, ``name 3``… when a layer already has it."""
    if name not in viewer.layers:
        return name
    k = 2
    while f"{name} {k}" in viewer.layers:
        k += 1
    return f"{name} {k}"


def add_in_steps(viewer: Any, layer: Any, pause_ms: int = 15) -> None:
    """Add a ready-made layer over several event-loop turns, so that no single turn does all of napari's work:

    1. added hidden and not yet selected: napari makes the layer-list row, the controls and the vispy node, but
       neither slices nor draws it;
    2. shown (text still off): slicing, upload and the first draw, which compiles the layer's shaders;
    3. text on (the first text of a session renders its glyphs);
    4. selected, as napari selects a new layer (the controls panel switches to it).
    """
    from qtpy.QtCore import QTimer

    visible = layer.visible
    text = getattr(layer, "text", None)
    with_text = bool(text is not None and text.visible and visible)
    layer.visible = False
    if with_text:
        text.visible = False
    layers = viewer.layers
    activate = getattr(layers, "_activate_on_insert", None)  # napari's own switch (0.4-0.9); else selected at once
    if activate is not None:
        layers._activate_on_insert = False
    try:
        viewer.add_layer(layer)
    finally:
        if activate is not None:
            layers._activate_on_insert = activate
    steps = [lambda: setattr(layer, "visible", visible)]
    if with_text:
        steps.append(lambda: setattr(layer.text, "visible", True))
    if activate is not None:
        steps.append(lambda: setattr(layers.selection, "active", layer))

    def step() -> None:
        if layer not in layers:
            return
        steps.pop(0)()
        if steps:
            QTimer.singleShot(pause_ms, step)

    QTimer.singleShot(pause_ms, step)


def file_name_of(layer: Any) -> str:
    """The image's file name, else the layer's name (an image made in memory)."""
    path = getattr(layer.source, "path", None)
    return Path(path).name if path else layer.name
