"""Plugins ▸ Review cells: work through a field's cells least-certain first, fix them, count, sign, and retrain.

The widget is thin: the annotation table (``core.annotations``) holds the cells, their history and sign-off and
autosaves to the review project after every change; :class:`ReviewDisplay` draws it; the panels show the gallery,
the differential and the training. Keys (bound on the viewer and on the review's layers, so they work whichever
layer is selected): ``1``-``9`` class, ``A`` accept, ``R`` not classed, ``Delete`` reject (not a cell), ``N``/``P``
next/previous (least certain first), ``Ctrl+Z``/``Ctrl+Shift+Z`` undo/redo.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ...core.annotations import UNCERTAIN_SCORE, AnnotationTable
from ...core.errors import BloodcellInputError
from ...core.models.recent import home
from ...core.review_project import Autosaver, ReviewProject, image_digest, image_key
from ...core.settings import load_settings, save_setting
from ..review_display import ReviewDisplay, ReviewLayers
from .review_detect import detect_for_review
from .review_panels import CellGallery, DifferentialPanel, form_of
from .review_retrain import RetrainPanel

if TYPE_CHECKING:
    import napari

NO_BOXES = "(none: draw boxes)"
DETECT_NOW = "(detect now: active detector, else classical)"
DEFAULT_CLASSES = ["RBC", "WBC", "Platelets"]


@dataclasses.dataclass
class Field:
    layer: Any
    pixels: np.ndarray
    image: dict[str, Any]
    project: ReviewProject
    key: str


@dataclasses.dataclass
class Session:
    table: AnnotationTable
    display: ReviewDisplay
    saver: Autosaver
    image: dict[str, Any]
    pixels: np.ndarray
    project: ReviewProject
    key: str


def _keep_pixels(project: ReviewProject, digest: str, pixels: np.ndarray) -> None:
    """In a thread: a failure (disk full) is not raised there; the export then names the image it left out."""
    try:
        project.keep_pixels(digest, pixels)
    except (OSError, BloodcellInputError):
        pass


class ReviewWidget(QWidget):
    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.session: Session | None = None
        self.worker = None
        """The detection job of *detect now*, while it runs."""
        self.spare_layers: ReviewLayers | None = None
        """The layers of the last closed review, reused by the next (see :class:`ReviewLayers`)."""
        self._keeping: threading.Thread | None = None
        """Keeps an in-memory image in the review project (PNG encoding stays off the event loop)."""
        self._bound: list[tuple[Any, str]] = []
        settings = load_settings()
        self.image_combo, self.boxes_combo = QComboBox(), QComboBox()
        self.project_edit = QLineEdit(settings.get("review_project") or str(home() / "reviews" / "default"))
        self.reviewer_edit = QLineEdit(settings.get("reviewer", ""))
        self.reviewer_edit.setPlaceholderText("your name (recorded on every change)")
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(UNCERTAIN_SCORE)
        self.start_button = QPushButton("Start / resume review")
        self.start_button.clicked.connect(self.start)
        form = form_of({"image": self.image_combo, "boxes": self.boxes_combo, "review project": self.project_edit,
                        "reviewer": self.reviewer_edit, "uncertain below": self.threshold})

        self.keys_label = QLabel("")
        self.keys_label.setWordWrap(True)
        self.cell_label = QLabel("Start a review to see the cells least certain first.")
        self.cell_label.setWordWrap(True)
        self.queue_label = QLabel("")
        self.class_row = QHBoxLayout()
        actions = QGridLayout()
        self.buttons: dict[str, QPushButton] = {}
        for k, (text, slot) in enumerate([("◀ Prev (P)", self.previous), ("Next (N) ▶", self.next),
                                          ("Accept (A)", self.accept), ("Not classed (R)", self.not_classed),
                                          ("Reject (Del)", self.reject), ("Accept certain rest (Shift+A)",
                                                                          self.accept_certain_rest),
                                          ("Undo", self.undo), ("Redo", self.redo), ("Sign", self.sign)]):
            button = QPushButton(text)
            button.clicked.connect(lambda _=False, s=slot: self._guard(s))
            actions.addWidget(button, k // 3, k % 3)
            self.buttons[text.split(" (")[0].strip("◀▶ ")] = button
        self.flags_edit = QLineEdit()
        self.flags_edit.setPlaceholderText("labels of this cell, comma-separated (multi-label morphology)")
        self.flags_edit.setToolTip("e.g. echinocyte, stomatocyte; Enter records them (undoable)")
        self.flags_edit.editingFinished.connect(lambda: self._guard(self.set_flags))
        self.sign_label = QLabel("")
        self.sign_label.setWordWrap(True)

        self.gallery = CellGallery(on_focus=self.go_to, on_move=self.move_to_class)
        self.differential = DifferentialPanel()
        self.training = RetrainPanel(export=self.export, reviewer=self.reviewer)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.gallery, "Gallery")
        scroller = QScrollArea()  # the training panel keeps its natural height and scrolls in a short dock
        scroller.setWidgetResizable(True)
        scroller.setWidget(self.training)
        self.tabs.addTab(scroller, "Retrain")
        self.training_line = QLabel("")  # the training's progress, visible whichever tab is open
        self.training_line.setWordWrap(True)
        self.training.status_changed = self.training_line.setText

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.start_button)
        layout.addWidget(self.keys_label)
        layout.addLayout(self.class_row)
        layout.addLayout(actions)
        layout.addWidget(self.cell_label)
        layout.addWidget(self.flags_edit)
        layout.addWidget(self.queue_label)
        layout.addWidget(self.sign_label)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.training_line)
        layout.addWidget(self.differential)
        viewer.layers.events.inserted.connect(self._refresh_choices)
        viewer.layers.events.removed.connect(self._refresh_choices)
        self._refresh_choices()

    # -- set-up --------------------------------------------------------------------------------------------------
    def _refresh_choices(self, *_: Any) -> None:
        review_layers = {id(layer) for s in [self.session] if s for layer in s.display.layers}
        review_layers |= {id(layer) for layer in (self.spare_layers.all() if self.spare_layers else [])}
        for combo, kind, extra in ((self.image_combo, "image", []),
                                   (self.boxes_combo, "shapes", [DETECT_NOW, NO_BOXES])):
            current = combo.currentText()
            combo.clear()
            names = [layer.name for layer in self.viewer.layers
                     if layer._type_string == kind and id(layer) not in review_layers]
            combo.addItems(names + extra)
            if current in names + extra:
                combo.setCurrentText(current)

    def reviewer(self) -> str:
        """The reviewer's name, asked once and remembered."""
        name = self.reviewer_edit.text().strip()
        if not name:
            name, ok = QInputDialog.getText(self, "Reviewer", "Your name (recorded with every change you make):")
            name = name.strip() if ok else ""
            if not name:
                raise BloodcellInputError("a review needs the reviewer's name")
            self.reviewer_edit.setText(name)
        if name != load_settings().get("reviewer"):
            save_setting("reviewer", name)
        return name

    def start(self) -> None:
        try:
            self._start()
        except BloodcellInputError as exc:
            self._error(str(exc))

    def detect_and_start(self, reviewer: str = "", project: Path | None = None) -> None:
        """One step from an open image to its review: detect it now (the registry's active detector, else the
        classical one) and start; a field already under review is restored instead."""
        if reviewer:
            self.reviewer_edit.setText(reviewer)
        if project is not None:
            self.project_edit.setText(str(project))
        self.boxes_combo.setCurrentText(DETECT_NOW)
        self.start()

    def _start(self) -> None:
        from napari.utils.notifications import show_info

        field = self._field()
        self.close_session()
        loaded = field.project.load(field.key)
        if loaded is not None:
            show_info(f"restored the review of {field.image['file_name']} ({len(loaded[0])} cells, saved "
                      f"{field.project.sidecar(field.key)})")
            self._open(field, loaded[0], restored=True)
        elif self.boxes_combo.currentText() == DETECT_NOW:
            self.worker = detect_for_review(field, self)
        else:
            self._open(field, self._table_from_layer(field.image), restored=False)

    def _field(self) -> Field:
        """The chosen image layer as a field to review: pixels, description, content key and project."""
        name = self.image_combo.currentText()
        if not name:
            raise BloodcellInputError("open an image first (File ▸ Open, or run Detect cells)")
        layer = self.viewer.layers[name]
        pixels = np.asarray(layer.data) if not hasattr(layer.data, "dask") else None
        if pixels is None or pixels.ndim != (3 if layer.rgb else 2):
            raise BloodcellInputError(f"layer {name!r} is not a single 2D field (shape {tuple(layer.data.shape)}); "
                                      "open one image to review it")
        self.reviewer()
        path = layer.metadata.get("path") or (str(layer.source.path) if layer.source.path else None)
        path = path if path and Path(path).is_file() else None
        digest = image_digest(path) if path else image_digest(array=pixels)
        file_name = Path(path).name if path else f"{name}.png"
        height, width = pixels.shape[:2]
        image = {"file_name": file_name, "width": int(width), "height": int(height), "path": path, "digest": digest}
        project = ReviewProject(Path(self.project_edit.text()).expanduser())
        save_setting("review_project", str(project.folder))
        return Field(layer, pixels, image, project, image_key(file_name, digest))

    def _open(self, field: Field, table: AnnotationTable, restored: bool) -> None:
        """Show the table of ``field`` for review and keep it saved."""
        name = Path(field.image["file_name"]).stem
        display = ReviewDisplay(self.viewer, table, name, self.reviewer, self._default_class, self.spare_layers)
        self.spare_layers = None
        saver = Autosaver(field.project, field.key, table, field.image, background=True)
        if not restored:
            saver.save_now()
        if field.image.get("path") is None:  # only in memory: kept with the review so it can be exported
            self._keeping = threading.Thread(target=_keep_pixels, args=(field.project, field.image["digest"],
                                                                        field.pixels), daemon=True)
            self._keeping.start()
        self.session = Session(table, display, saver, field.image, field.pixels, field.project, field.key)
        self._hide_other_annotations(display)
        table.listeners.append(lambda kind, ids: self._update_status())
        display.current_changed = self._update_status
        self._build_class_row(table.classes)
        self._bind_keys([field.layer, *display.layers])
        self.gallery.attach(table, field.pixels)
        self.differential.attach(table)
        self.viewer.layers.selection.active = display.markers
        first = table.queue()
        display.set_current(int(first[0]) if len(first) else None)
        self._update_status()

    def _hide_other_annotations(self, display: ReviewDisplay) -> None:
        """Boxes and points already shown (the source boxes, a ground-truth layer) would mix two sets of labels
        with the review's: hide them (the layer list's eye shows them again) and say so."""
        from napari.utils.notifications import show_info

        mine = {id(layer) for layer in display.layers}
        hidden = [layer for layer in self.viewer.layers if layer._type_string in ("shapes", "points", "vectors")
                  and id(layer) not in mine and layer.visible]
        for layer in hidden:
            layer.visible = False
        if hidden:
            show_info(f"hidden under the review: {', '.join(layer.name for layer in hidden)} (show them again in "
                      "the layer list)")

    def _table_from_layer(self, image: dict[str, Any]) -> AnnotationTable:
        from ..layers import shapes_to_annotation_set

        boxes_name = self.boxes_combo.currentText()
        if boxes_name == NO_BOXES or boxes_name not in self.viewer.layers:
            return AnnotationTable(list(DEFAULT_CLASSES))
        shapes = self.viewer.layers[boxes_name]
        aset = shapes_to_annotation_set(shapes.data, {"metadata": shapes.metadata, "features": shapes.features},
                                        images=[image])
        return AnnotationTable.from_record(aset.images[0], aset.classes)

    def close_session(self) -> None:
        if self.session is None:
            return
        self._unbind_keys()
        self.session.saver.close()
        self.spare_layers = self.session.display.close()
        self.session = None

    # -- keys ------------------------------------------------------------------------------------------------------
    def _key_actions(self, n_classes: int) -> dict[str, Any]:
        keys = {str(k + 1): (lambda k=k: self.assign(k)) for k in range(min(n_classes, 9))}
        keys.update({"A": self.accept, "Shift-A": self.accept_certain_rest, "R": self.not_classed, "Delete": self.reject, "Backspace": self.reject,
                     "N": self.next, "P": self.previous, "Control-Z": self.undo, "Control-Shift-Z": self.redo})
        return keys

    def _bind_keys(self, layers: list[Any]) -> None:
        for key, action in self._key_actions(len(self.session.table.classes)).items():
            for provider in [self.viewer, *layers]:
                provider.bind_key(key, lambda *_, a=action: self._guard(a), overwrite=True)
                self._bound.append((provider, key))

    def _unbind_keys(self) -> None:
        for provider, key in self._bound:
            try:
                provider.bind_key(key, None, overwrite=True)
            except (KeyError, ValueError, TypeError):
                pass
        self._bound.clear()

    def _build_class_row(self, classes: list[str]) -> None:
        while self.class_row.count():
            self.class_row.takeAt(0).widget().deleteLater()
        for k, name in enumerate(classes[:9]):
            button = QPushButton(f"{k + 1} {name}")
            button.clicked.connect(lambda _=False, k=k: self._guard(lambda: self.assign(k)))
            self.class_row.addWidget(button)
        mapping = " · ".join(f"{k + 1} {c}" for k, c in enumerate(classes[:9]))
        self.keys_label.setText(f"Keys: {mapping} · A accept · Shift+A accept the certain rest · R not classed · "
                                "Del reject · N/P next/previous · "
                                "Ctrl+Z / Ctrl+Shift+Z undo/redo. Draw a box in the 'edit' layer to add a cell.")

    # -- actions ---------------------------------------------------------------------------------------------------
    def _guard(self, action) -> None:
        """Run an action; a bad-input error is shown, never raised into Qt."""
        try:
            action()
        except BloodcellInputError as exc:
            self._error(str(exc))

    def _targets(self) -> np.ndarray:
        if self.session is None:
            raise BloodcellInputError("start a review first")
        return self.session.display.selected_ids()

    def _after_action(self, ids: np.ndarray) -> None:
        s = self.session
        if len(ids) > 1:
            s.display.markers.selected_data = set()
        elif s.display.current is not None and len(ids) == 1 and ids[0] == s.display.current:
            self._advance()

    def assign(self, label: int | str) -> None:
        ids = self._targets()
        if len(ids):
            self.session.table.set_class(ids, label, by=self.reviewer())
            self._after_action(ids)

    def move_to_class(self, ids: np.ndarray, name: str | None) -> None:
        """From the gallery: a class, or None for not classed."""
        if self.session is None:
            return
        if name is None:
            self.session.table.set_review(ids, "not_classed", by=self.reviewer())
        else:
            self.session.table.set_class(ids, name, by=self.reviewer())

    def _set_review(self, state: str) -> None:
        ids = self._targets()
        if len(ids):
            self.session.table.set_review(ids, state, by=self.reviewer())
            self._after_action(ids)

    def accept_certain_rest(self) -> None:
        """Accept, in one undoable step, every unreviewed cell the model was sure of (confidence at or above the
        *uncertain below* threshold): the uncertain ones get a person's look, the rest are confirmed at once."""
        if self.session is None:
            raise BloodcellInputError("start a review first")
        t = self.session.table
        certain = t.ids[(t.col("review") == "unreviewed") & ~t.uncertain_mask(self.threshold.value())]
        if len(certain):
            t.set_review(certain, "accepted", by=self.reviewer())
            self._advance()

    def accept(self) -> None:
        self._set_review("accepted")

    def not_classed(self) -> None:
        self._set_review("not_classed")

    def reject(self) -> None:
        ids = self._targets()
        if len(ids):
            self.session.display.reject_or_delete(ids, self.reviewer())
            self._after_action(ids)

    def set_flags(self) -> None:
        """Record the typed multi-label flags on the current cell (one undoable edit)."""
        s = self.session
        if s is None or s.display.current is None or s.display.current not in s.table:
            return
        flags = [f.strip() for f in self.flags_edit.text().split(",") if f.strip()]
        if flags != s.table.object_info(s.display.current)["flags"]:
            s.table.set_flags([s.display.current], flags, by=self.reviewer())

    def undo(self) -> None:
        if self.session is not None:
            self._back_to(self.session.table.undo(), "nothing to undo")

    def redo(self) -> None:
        if self.session is not None:
            self._back_to(self.session.table.redo(), "nothing to redo")

    def _back_to(self, edit: Any, nothing: str) -> None:
        """After undo/redo the cell it touched becomes the current one again, so the reviewer sees what changed
        (the review had moved on to the next cell after the original decision)."""
        if edit is None:
            self._error(nothing)
            return
        table = self.session.table
        touched = [int(i) for i in [*edit.after.columns["id"].tolist(), *edit.before.columns["id"].tolist()]
                   if int(i) in table]
        if touched:
            self.session.display.set_current(touched[0], zoom=len(touched) == 1)

    def next(self) -> None:
        self._step(+1)

    def previous(self) -> None:
        self._step(-1)

    def go_to(self, object_id: int) -> None:
        if self.session is not None:
            self.session.display.set_current(object_id)
            self._update_status()

    def _step(self, direction: int) -> None:
        if self.session is None:
            return
        order = self.session.table.queue(only_unreviewed=False)
        if not len(order):
            return
        current = self.session.display.current
        hits = np.flatnonzero(order == current) if current is not None else []
        k = (int(hits[0]) + direction) % len(order) if len(hits) else 0
        self.go_to(int(order[k]))

    def _advance(self) -> None:
        """After deciding on the current cell: the next unreviewed one in review order."""
        table = self.session.table
        left = table.queue()
        if len(left):
            self.go_to(int(left[0]))
        else:
            self._step(+1)

    def sign(self) -> None:
        """Sign the field (refused, with the reason shown, while uncertain cells are unreviewed)."""
        self._guard(self._sign)

    def _sign(self) -> None:
        s = self.session
        if s is None:
            raise BloodcellInputError("start a review first")
        signed = s.table.sign(self.reviewer(), below=self.threshold.value())
        from napari.utils.notifications import show_info

        show_info(f"{s.image['file_name']} signed by {signed['by']}")
        self._update_status()

    def _default_class(self) -> int:
        s = self.session
        if s is not None and s.display.current is not None and s.display.current in s.table:
            return int(s.table.col("label")[s.table.positions([s.display.current])[0]])
        return 0

    # -- export ----------------------------------------------------------------------------------------------------
    def export(self, dataset: Path, views: list[str] | None = None):
        """Export every reviewed image of the project into ``dataset`` (a new version) in the background."""
        from napari.qt.threading import thread_worker

        from ...core.export import export_dataset, items_from_project
        from .jobs import _reporting_errors

        if self.session is None:
            self._error("start a review first")
            return None
        self.session.saver.flush()
        if self._keeping is not None:
            self._keeping.join()
        try:
            items = items_from_project(self.session.project.folder)
            by = self.reviewer()
        except BloodcellInputError as exc:
            self._error(str(exc))
            return None
        worker = thread_worker(_reporting_errors, start_thread=False)(export_dataset(items, dataset, by=by, views=views or ()))
        worker.returned.connect(self._exported)
        worker.start()
        return worker

    def _exported(self, result: Any) -> None:
        from napari.utils.notifications import show_info

        if hasattr(result, "message"):
            self._error(result.message)
            return
        text = (f"dataset version {result.version}: {result.images} image(s), {result.boxes} boxes, "
                f"{result.crops} crops" + (f" — {'; '.join(result.warnings)}" if result.warnings else ""))
        reason = self.training.update_readiness()
        self.training._say(text + (f". {reason}" if reason else ""))
        show_info(text)

    # -- status ----------------------------------------------------------------------------------------------------
    def _update_status(self) -> None:
        s = self.session
        if s is None:
            return
        t = s.table
        if s.display.current is not None and s.display.current in t:
            info = t.object_info(s.display.current)
            score = "" if np.isnan(info["score"]) else f", confidence {info['score']:.2f}"
            changed = time.strftime("%H:%M:%S", time.localtime(info["changed"]))
            typed = ""
            probs = info["attributes"].get("class_probabilities")
            if probs:
                top = sorted(probs.items(), key=lambda kv: -kv[1])[:3]
                typed = ("<br>classifier: " + ", ".join(f"{k} {v:.2f}" for k, v in top)
                         + f" (margin {info['margin']:.2f})" * (not np.isnan(info["margin"])))
            if not self.flags_edit.hasFocus():
                self.flags_edit.setText(", ".join(info["flags"]))
            self.cell_label.setText(
                f"Cell {info['id']}: <b>{info['class']}</b>{score} — {info['review']}<br>"
                f"made by {info['source']}; last changed by {info['changed_by']} at {changed}{typed}")
        else:
            self.cell_label.setText("No cell selected.")
        unreviewed = int((t.col("review") == "unreviewed").sum())
        blocking = len(t.blocking_signoff(self.threshold.value()))
        self.queue_label.setText(f"{len(t)} cells; {unreviewed} unreviewed, {blocking} of them uncertain "
                                 f"(must be seen before signing)")
        self.buttons["Sign"].setEnabled(blocking == 0)
        if t.signed:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(t.signed["at"]))
            state = "" if t.signature_valid else " — changed since, sign again"
            self.sign_label.setText(f"Signed by {t.signed['by']} on {when}{state}")
        else:
            self.sign_label.setText("Not signed.")
        for message in s.saver.errors[-1:]:
            self._error(message)
        s.saver.errors.clear()

    def _error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.cell_label.setText(f"<span style='color:#ff6060'>{message}</span>")
        show_error(message)
