"""How a field under review is drawn: fast layers for every cell, an editable Shapes layer for the current one.

napari Shapes slow down badly past a few thousand boxes (10,000 rectangles took 1.7 s to add and 180 ms to
recolour 1,000 of them here), so every cell is drawn as four line segments in one Vectors layer (outline in the
class colour) plus one marker in a Points layer (colour = review state; the Points layer also gives rubber-band
selection of many cells). Only the cell being edited, and boxes a person draws, live in a small Shapes layer,
whose move/resize/draw/delete events go back into the annotation table. The table is the truth; layers are
redrawn from it after every change (colours only, when no box moved). Past 10,000 cells (a region of a whole-slide
scan) the outlines and the markers are drawn in a window around the view only (see :mod:`.review_outlines`).

Cells made from point annotations (one click per cell) keep the click in ``attributes["point"]``; their marker sits
on that point (a cross, where box cells have a dot in the corner), so the reviewer sees both the grown box and what
the annotator clicked. Red cells name their morphology (the class, or morphology flags) in the caption, and every
marker carries class, morphology and review as features, which napari shows when the mouse is over it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.annotations import AnnotationTable
from ..core.boxes import napari_to_xyxy, xyxy_to_napari
from .layer_refresh import one_refresh, raw_layer
from .layers import class_colours
from .review_captions import cell_caption, morphologies
from .review_outlines import VIEW_DELAY_MS, VisibleOutlines, canvas_size, outline_vectors, viewer_camera

if TYPE_CHECKING:
    import napari

REVIEW_COLOURS = {"unreviewed": "#ffffff", "accepted": "#2ca02c", "corrected": "#17becf",
                  "not_classed": "#8c8c8c", "rejected": "#00000000"}
CURRENT_COLOUR = "#ffff00"
OUTLINE_DELAY_MS = 300
"""Class outlines are recoloured this long after the last change of a burst of keys (see ``recolour``)."""
REVIEW_LAYER = "bloodcell_review_layer"
THUMBNAIL_VECTORS = 128
"""Outline segments drawn into the cells layer's thumbnail: napari draws them one by one in Python (50 ms for a
field's 400 on every data or colour change here); a sample draws the same small picture."""
def _rgba(hex_colour: str) -> np.ndarray:
    h = hex_colour.lstrip("#")
    values = [int(h[i:i + 2], 16) / 255 for i in range(0, len(h), 2)]
    return np.asarray(values + [1.0] * (4 - len(values)), dtype=np.float32)


@dataclasses.dataclass
class ReviewLayers:
    """The three layers a review draws into. They outlive a review and are reused by the next one: removing a
    non-empty Shapes layer and adding another crashes napari 0.9 in vispy's ``glDrawArrays`` under software OpenGL
    (Xvfb, remote desktops, VMs), so a review empties and hides its layers instead of removing them."""

    outlines: Any
    markers: Any
    edit: Any

    def all(self) -> list[Any]:
        return [self.outlines, self.markers, self.edit]

    def alive(self, viewer: Any) -> bool:
        """Still in the viewer (a person may have deleted one; then a fresh set is made)."""
        return all(layer in viewer.layers for layer in self.all())

    @classmethod
    def create(cls, viewer: Any) -> ReviewLayers:
        """Empty layers; a review fills them. (An empty Points layer given an empty colour array makes napari 0.9
        raise "zero-size array to reduction operation", so the layers are made empty and filled afterwards.)"""
        mark = {REVIEW_LAYER: True}
        outlines = viewer.add_vectors(np.zeros((0, 2, 2)), name="cells", edge_width=2, vector_style="line",
                                      edge_color="white", units="pixel", metadata=dict(mark))
        markers = viewer.add_points(np.zeros((0, 2)), name="review", size=6.0, border_width=0, units="pixel",
                                    metadata=dict(mark))
        edit = viewer.add_shapes(name="edit", ndim=2, edge_color=CURRENT_COLOUR, face_color="transparent",
                                 edge_width=3, units="pixel", metadata=dict(mark))
        return cls(outlines, markers, edit)


def is_review_layer(layer: Any) -> bool:
    """A layer a review draws into (open or kept for the next review). Marked in its metadata, because a plugin
    widget sees the viewer through napari's proxy, whose layer objects are not the viewer's own (``is`` and
    ``id`` comparisons between them fail)."""
    return bool(getattr(layer, "metadata", {}).get(REVIEW_LAYER))


class ReviewDisplay:
    """The three layers of one review and the bridge from their edits to the table."""

    def __init__(self, viewer: napari.Viewer, table: AnnotationTable, name: str, reviewer: Callable[[], str],
                 default_class: Callable[[], int], layers: ReviewLayers | None = None) -> None:
        self.viewer, self.table, self.name = viewer, table, name
        self.reviewer, self.default_class = reviewer, default_class
        self.current: int | None = None
        self.current_changed: Callable[[], None] | None = None
        """Called whenever the current cell changes (the widget's cell line follows it)."""
        self._edit_ids: list[int] = []
        self._outline_ids: set[int] = set()
        self._timer: Any = None
        self._syncing = False
        self._released = False  # between two fields of a case: the layers show the last one, edits are ignored
        self.visible = VisibleOutlines(viewer)
        self._drawn: tuple[np.ndarray, np.ndarray] = (np.zeros(0, dtype=np.int64), np.zeros((0, 4)))
        """Ids and boxes of the table as last drawn (an undo that moved no box only recolours)."""
        self._view_timer: Any = None
        self._measure(table)
        self.reused = layers is not None and layers.alive(viewer)
        self.shown = layers if self.reused else ReviewLayers.create(viewer)
        self.outlines, self.markers, self.edit = self.shown.outlines, self.shown.markers, self.shown.edit
        raw_layer(self.outlines)._max_vectors_thumbnail = THUMBNAIL_VECTORS
        self._label(name)
        for layer in self.layers:
            if not layer.visible:  # setting it (even to True again) refreshes the layer
                layer.visible = True
        self.redraw()
        self.edit.events.data.connect(self._on_edit)
        self.markers.events.data.connect(self._on_marker_edit)
        camera = viewer_camera(viewer)
        for event in (camera.events.center, camera.events.zoom):
            event.connect(self._view_moved)
        table.listeners.append(self.on_table_change)

    def _measure(self, table: AnnotationTable) -> None:
        """Colours and sizes that follow the table: the class palette, the marker size and the typical cell."""
        palette = class_colours(table.classes)
        self.class_rgba = np.stack([_rgba(palette[c]) for c in table.classes])
        self.review_rgba = {k: _rgba(v) for k, v in REVIEW_COLOURS.items()}
        boxes = table.col("box")
        sizes = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) if len(boxes) else np.array([20.0])
        self.marker_size = float(max(4.0, 0.14 * np.median(sizes)))
        largest = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) if len(boxes) else np.array([20.0])
        self.cell_side = float(max(np.median(largest), 1.0))  # six of these across: the field's magnification

    def _label(self, name: str) -> None:
        """Name the layers after the field (a case's fields share the case's name: a rename costs a layer-list
        update)."""
        self.name = name
        for layer, prefix in ((self.outlines, "cells"), (self.markers, "review"), (self.edit, "edit")):
            if layer.name != f"{prefix}: {name}":
                layer.name = f"{prefix}: {name}"
            layer.metadata["bloodcell_review"] = name

    def release(self) -> None:
        """Stop following the table but leave the layers as they are: a case's next field is drawn into them at
        once by :meth:`show_table` (emptying, hiding and renaming them cost about a third of a field switch)."""
        self.current = None  # a redraw still queued (see recolour) then finds nothing to show
        self._outline_ids.clear()
        self._released = True
        if self._timer is not None:
            self._timer.stop()
        if self.on_table_change in self.table.listeners:
            self.table.listeners.remove(self.on_table_change)

    def show_table(self, table: AnnotationTable, name: str) -> None:
        """Draw another table (a case's next field) into the same layers: no layer is made, renamed or shown
        again, and each layer is refreshed once (see :func:`.layer_refresh.one_refresh`); the caller then sets
        the current cell, which replaces the edit layer's rectangle in place."""
        self.release()
        self.table = table
        self._measure(table)
        self._label(name)
        self._released = False
        self.redraw(current=False)
        table.listeners.append(self.on_table_change)

    @property
    def layers(self) -> list[Any]:
        return self.shown.all()

    def close(self) -> ReviewLayers:
        """Stop following the table, empty and hide the layers, and hand them back for the next review."""
        self.release()
        camera = viewer_camera(self.viewer)
        for event, slot in ((self.edit.events.data, self._on_edit), (self.markers.events.data, self._on_marker_edit),
                            (camera.events.center, self._view_moved), (camera.events.zoom, self._view_moved)):
            with contextlib.suppress(TypeError, ValueError, RuntimeError):
                event.disconnect(slot)
        self._syncing = True
        try:
            self.edit.data = []
            self.markers.selected_data = set()
            self.markers.data = np.zeros((0, 2))
            self.outlines.data = np.zeros((0, 2, 2))
        finally:
            self._syncing = False
        for layer in self.layers:
            layer.visible = False
            layer.metadata.pop("bloodcell_review", None)
            layer.name = layer.name.split(":")[0] + " (closed review)"
        return self.shown

    # -- drawing -------------------------------------------------------------------------------------------------
    def _centres(self, pos: np.ndarray) -> np.ndarray:
        """Marker positions: just inside each box's top-left corner, so the marker never hides the cell itself;
        on the annotated point for a cell made from a point."""
        b = self.table.col("box")[pos]
        if not len(b):
            return np.zeros((0, 2))
        inset = self.marker_size / 2
        out = np.stack([np.minimum(b[:, 1] + inset, b[:, 3]), np.minimum(b[:, 0] + inset, b[:, 2])], 1)
        points = self._points(pos)
        has = ~np.isnan(points[:, 0])
        out[has] = points[has][:, ::-1]
        return out

    def _marker_symbols(self, pos: np.ndarray) -> None:
        """Crosses on annotated points, dots elsewhere (set only when a field has points, or had them)."""
        point = ~np.isnan(self._points(pos)[:, 0])
        if point.any() or self.markers.metadata.get("bloodcell_crosses"):
            self.markers.symbol = np.where(point, "cross", "disc")
            self.markers.metadata["bloodcell_crosses"] = bool(point.any())

    def _points(self, pos: np.ndarray) -> np.ndarray:
        from .point_layers import cell_points

        return cell_points(self.table.col("attributes")[pos])

    def _marker_features(self, pos: np.ndarray) -> dict[str, list[str]]:
        """What napari shows when the mouse is over a marker: class, red-cell morphology, review state."""
        labels, flags, reviews = (self.table.col(k)[pos] for k in ("label", "flags", "review"))
        classes = [self.table.classes[int(k)] for k in labels]
        seen: dict[tuple, str] = {}  # a field has few distinct (class, flags) pairs

        def named(c: str, f: Any) -> str:
            key = (c, *(f or ()))
            if key not in seen:
                seen[key] = ", ".join(morphologies(c, f)) or "-"
            return seen[key]

        return {"class": classes, "morphology": [named(c, f) for c, f in zip(classes, flags)],
                "review": [str(r) for r in reviews]}

    def _outline_colours(self, pos: np.ndarray) -> np.ndarray:
        colours = self.class_rgba[self.table.col("label")[pos]].copy()
        colours[self.table.col("review")[pos] == "rejected", 3] = 0.0
        return np.repeat(colours, 4, axis=0)

    def _marker_colours(self, pos: np.ndarray) -> np.ndarray:
        reviews = self.table.col("review")[pos]
        if not len(reviews):
            return np.zeros((0, 4), dtype=np.float32)
        states = list(self.review_rgba)
        codes = np.zeros(len(reviews), dtype=np.int64)
        for k, state in enumerate(states):
            codes[reviews == state] = k
        return np.stack([self.review_rgba[r] for r in states])[codes]

    def redraw(self, current: bool = True) -> None:
        """Everything from the table (after cells were added, removed or moved; a case's next field), and the
        current cell unless ``current`` is false (the caller sets it)."""
        self._drawn = (self.table.ids.copy(), self.table.col("box").copy())
        self._draw_window()
        if current:
            self._show_current()

    def _draw_window(self) -> None:
        """Outlines and markers of the cells :class:`VisibleOutlines` chooses (all of a field up to 10,000)."""
        self._outline_ids.clear()
        pos = self.visible.choose(self.table.col("box"))
        n = len(pos)
        with one_refresh(self.outlines, self.markers):
            self.outlines.data = outline_vectors(self.table.col("box")[pos]) if n else np.zeros((0, 2, 2))
            if n:
                self.outlines.edge_color = self._outline_colours(pos)
            self._syncing = True
            try:
                if self.markers.current_size != self.marker_size:
                    self.markers.current_size = self.marker_size
                self.markers.data = self._centres(pos)
                if n and not np.allclose(self.markers.size, self.marker_size):
                    self.markers.size = self.marker_size
                self.markers.face_color = self._marker_colours(pos) if n else "white"
                if n:
                    self._marker_symbols(pos)
                    self.markers.features = self._marker_features(pos)
                self.markers.selected_data = set()
            finally:
                self._syncing = False

    def _view_moved(self, *_: Any) -> None:
        if self._view_timer is None:
            from qtpy.QtCore import QTimer

            self._view_timer = QTimer()
            self._view_timer.setSingleShot(True)
            self._view_timer.timeout.connect(self._follow_view)
        self._view_timer.start(VIEW_DELAY_MS)

    def _follow_view(self) -> None:
        """The view stopped outside the window drawn: draw the window around it."""
        if self._released or not self.visible.stale(len(self.table)):
            return
        before = len(self.visible.positions)
        self.visible.choose(self.table.col("box"))
        if len(self.visible.positions) or before:
            self._draw_window()

    def select_ids(self, ids: np.ndarray) -> None:
        """Select cells as a rubber band over their markers would (those not drawn now are left out)."""
        _, k = self.visible.index_of(self.table.positions(ids))
        self.markers.selected_data = set(k.tolist())

    def recolour(self, ids: np.ndarray) -> None:
        """Only the colours of ``ids`` (a class or review change): cheap even for thousands of cells.

        The review markers change at once; the class outlines a moment after the last key of a burst
        (``OUTLINE_DELAY_MS``). Any change to a vispy mesh (the outlines are one) recompiles its shader, 40-60 ms
        under software OpenGL, and the key already redraws the current cell's mesh; the current cell's own class is
        shown at once in its caption."""
        pos = self.table.positions(ids)
        drawn, k = self.visible.index_of(pos)
        if len(k) and len(self.markers.data) == len(self.visible.positions):
            face = self.markers.face_color
            face[k] = self._marker_colours(pos[drawn])
            self.markers.face_color = face
            self._update_marker_features(pos[drawn], k)
        self._outline_ids.update(int(i) for i in ids)
        self._outline_timer().start(OUTLINE_DELAY_MS)
        if self.current is not None and self.current in set(ids.tolist()):
            # Redrawn on the next event-loop turn, and only if the review has not moved on by then: a key that
            # decides the current cell moves to the next one, which redraws the edit layer anyway (rebuilding
            # a Shapes layer is the slowest part of a key press under software OpenGL).
            from qtpy.QtCore import QTimer

            shown = self.current
            QTimer.singleShot(0, lambda: self._show_current() if self.current == shown else None)

    def _update_marker_features(self, pos: np.ndarray, rows: np.ndarray) -> None:
        """The hover features of the changed cells (table positions ``pos``, marker ``rows``), in place (no
        layer event: nothing is redrawn for them)."""
        table = self.markers.features
        if len(table) != len(self.visible.positions) or not {"class", "morphology", "review"} <= set(table.columns):
            return
        for column, values in self._marker_features(pos).items():
            table.iloc[rows, table.columns.get_loc(column)] = values

    def _outline_timer(self) -> Any:
        if self._timer is None:
            from qtpy.QtCore import QTimer

            self._timer = QTimer()
            self._timer.setSingleShot(True)
            self._timer.timeout.connect(self.flush_outlines)
        return self._timer

    def flush_outlines(self) -> None:
        """Recolour the outlines of the cells changed since the last flush (those still in the table)."""
        ids = np.asarray([i for i in self._outline_ids if i in self.table], dtype=np.int64)
        self._outline_ids.clear()
        if not len(ids) or len(self.outlines.data) != 4 * len(self.visible.positions):
            return
        pos = self.table.positions(ids)
        drawn, k = self.visible.index_of(pos)
        if not len(k):
            return
        edge = self.outlines.edge_color
        vec = (k[:, None] * 4 + np.arange(4)).ravel()
        edge[vec] = self._outline_colours(pos[drawn])
        self.outlines.edge_color = edge

    def on_table_change(self, kind: str, ids: np.ndarray) -> None:
        if kind in ("class", "review", "flags") or (kind in ("undo", "redo") and self._same_rows()):
            self.recolour(ids)
        elif kind != "sign":
            self.redraw()

    def _same_rows(self) -> bool:
        ids, boxes = self._drawn
        return np.array_equal(ids, self.table.ids) and np.allclose(boxes, self.table.col("box"))

    # -- the current cell ----------------------------------------------------------------------------------------
    def set_current(self, object_id: int | None, zoom: bool = True) -> None:
        self.current = object_id
        self._show_current()
        if object_id is not None and zoom:
            self.centre_on(object_id)
        if self.current_changed is not None:
            self.current_changed()

    def _show_current(self) -> None:
        """Put the current cell into the edit layer. Its one rectangle is replaced in place and its caption comes
        from a feature, so the layer's text visual is made once: re-assigning ``text`` per cell made vispy compile
        shaders and re-render glyphs on every key (about 100 ms a key under software OpenGL)."""
        ids = [self.current] if self.current is not None and self.current in self.table else []
        if self.current is not None and not ids:
            self.current = None
        self._syncing = True
        try:
            self._edit_ids = []
            if not ids:
                if len(self.edit.data):
                    self.edit.data = []
                return
            rect = list(xyxy_to_napari(self.table.col("box")[self.table.positions(ids)]))
            info = self.table.object_info(ids[0])
            caption = cell_caption(info)
            self._caption_text()
            if len(self.edit.data) == 1:
                with one_refresh(self.edit):  # one refresh for the rectangle and its caption
                    self.edit.data = rect
                    self.edit.features = {"caption": [caption]}
            else:
                if len(self.edit.data):
                    self.edit.data = []
                self.edit.feature_defaults = {"caption": caption}
                self.edit.add_rectangles(rect, edge_color=CURRENT_COLOUR, edge_width=3)
            self._edit_ids = list(ids)
        finally:
            self._syncing = False

    def _caption_text(self) -> None:
        """The edit layer's caption, set once per layer: the current cell's class and score, above its box."""
        if self.edit.metadata.get("bloodcell_caption"):
            return
        if "caption" not in self.edit.features:
            self.edit.features = {"caption": np.asarray([""] * len(self.edit.data), dtype=object)}
        self.edit.feature_defaults = {"caption": ""}
        self.edit.text = {"string": "{caption}", "color": CURRENT_COLOUR, "size": 11, "anchor": "upper_left",
                          "translation": [-4, 0]}
        self.edit.metadata["bloodcell_caption"] = True

    def centre_on(self, object_id: int, cells_across: float = 6.0) -> None:
        """Centre the cell at one magnification for the whole field (six typical cells across), as at the
        microscope: a zoom fitted to each cell would hide the size differences a reviewer judges (a macrocyte
        would look like any red cell), and re-zooming on every key makes napari re-scale every layer's text.
        A cell larger than that view is shown whole."""
        x1, y1, x2, y2 = self.table.col("box")[self.table.positions([object_id])[0]]
        camera = viewer_camera(self.viewer)
        camera.center = ((y1 + y2) / 2, (x1 + x2) / 2)
        side = max(self.cell_side * cells_across, 1.5 * max(x2 - x1, y2 - y1, 1.0))
        zoom = float(min(canvas_size(self.viewer)) / side)
        if not np.isclose(camera.zoom, zoom, rtol=1e-3):
            camera.zoom = zoom

    def selected_ids(self) -> np.ndarray:
        """Cells picked with the rubber band in the markers layer, else the current cell."""
        chosen = sorted(self.markers.selected_data)
        if chosen and len(self.markers.data) == len(self.visible.positions):
            return self.table.ids[self.visible.positions[np.asarray(chosen, dtype=np.int64)]]
        return np.asarray([] if self.current is None else [self.current], dtype=np.int64)

    # -- edits made in the layers --------------------------------------------------------------------------------
    def _on_edit(self, event: Any) -> None:
        """A person moved, drew or deleted a box in the edit layer: put it into the table."""
        action = str(getattr(event, "action", ""))
        if self._syncing or self._released or action not in ("added", "changed", "removed"):
            return
        data = self.edit.data
        boxes, _ = napari_to_xyxy(data) if len(data) else (np.zeros((0, 4)), None)
        by = self.reviewer()
        known = min(len(self._edit_ids), len(boxes))
        if action == "removed" and len(boxes) < len(self._edit_ids):
            gone = [i for i in self._edit_ids if i in self.table][len(boxes):] or self._edit_ids[-1:]
            self.reject_or_delete(np.asarray(gone), by)
            return
        if known:
            ids = np.asarray(self._edit_ids[:known])
            if not np.allclose(boxes[:known], self.table.col("box")[self.table.positions(ids)]):
                self.table.move(ids, boxes[:known], by=by)
        if len(boxes) > known:
            new = self.table.add(boxes[known:], [self.default_class()] * (len(boxes) - known), by=by)
            self.set_current(int(new[-1]), zoom=False)

    def reject_or_delete(self, ids: np.ndarray, by: str) -> None:
        """A model's box is rejected (kept, with who rejected it); a box a person drew is simply removed."""
        sources = self.table.col("source")[self.table.positions(ids)]
        drawn = ids[sources == by]
        if len(drawn):
            self.table.delete(drawn, by=by)
        made = np.setdiff1d(ids, drawn)
        if len(made):
            self.table.set_review(made, "rejected", by=by)

    def _on_marker_edit(self, event: Any) -> None:
        """Markers are not to be moved or deleted by hand: put them back where the table says."""
        if not (self._syncing or self._released) and str(getattr(event, "action", "")) in ("added", "changed",
                                                                                            "removed"):
            from qtpy.QtCore import QTimer

            QTimer.singleShot(0, self.redraw)
