"""Plugins ▸ Review cells: work through a field's cells least-certain first, fix them, count, sign, and retrain.

The widget is thin: the annotation table (``core.annotations``) holds the cells, their history and sign-off and
autosaves to the review project after every change; :class:`ReviewDisplay` draws it; the panels show the gallery,
the differential and the training. Keys (bound on the viewer and on the review's layers, so they work whichever
layer is selected): ``1``-``9`` class, ``A`` accept, ``R`` not classed, ``Delete`` reject (not a cell), ``N``/``P``
next/previous (least certain first), ``Ctrl+Z``/``Ctrl+Shift+Z`` undo/redo.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QInputDialog,
    QLabel,
    QLayout,
    QLineEdit,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ...core.annotations import UNCERTAIN_SCORE, AnnotationTable, Rows
from ...core.errors import BloodcellInputError
from ...core.paths import home
from ...core.review_project import Autosaver, split_region
from ...core.settings import load_settings, save_setting
from ..review_display import ReviewDisplay, ReviewLayers, is_review_layer
from .case_panel import CasePanel
from .compact import DOCK_WIDTH, Collapsible, DockFitting, button_grid, clear_layout, narrow_combo, scrolling
from .review_actions import ReviewActions
from .review_detect import detect_for_review
from .review_field import Field, Session, field_of, is_lazy, keep_pixels, region_text, view_region, warm_imports
from .review_panels import CellGallery, DifferentialPanel, form_of
from .review_retrain import RetrainPanel
from .review_suggest import SuggestPanel

if TYPE_CHECKING:
    import napari

NO_BOXES = "(none: draw boxes)"
DETECT_NOW = "(detect now: active detector, else classical)"
DEFAULT_CLASSES = ["RBC", "WBC", "Platelets"]
GALLERY_TAB = 1


class ReviewWidget(ReviewActions, DockFitting, QWidget):
    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.session: Session | None = None
        self.worker = None
        """The detection job of *detect now*, while it runs."""
        self.spare_layers: ReviewLayers | None = None
        """The layers of the last closed review, reused by the next (see :class:`ReviewLayers`)."""
        self.spare_display: ReviewDisplay | None = None
        """A case's last field's display, released (still drawn): the next field is drawn into it."""
        self._keeping: threading.Thread | None = None
        """Keeps an in-memory image in the review project (PNG encoding stays off the event loop)."""
        self._bound: list[tuple[Any, str]] = []
        self._bound_for: tuple = ()
        """The class count and layers the keys are bound for: a case's next field on the same layers keeps them."""
        self._class_row_for: list[str] = []
        self._closing: list[threading.Thread] = []
        """Autosaves of closed fields still writing their last change (a case switches fields without waiting)."""
        threading.Thread(target=warm_imports, name="bloodcell-imports", daemon=True).start()
        settings = load_settings()
        self.image_combo, self.boxes_combo = narrow_combo(QComboBox()), narrow_combo(QComboBox())
        self.project_edit = QLineEdit(settings.get("review_project") or str(home() / "reviews" / "default"))
        self.reviewer_edit = QLineEdit(settings.get("reviewer", ""))
        self.reviewer_edit.setPlaceholderText("your name (recorded on every change)")
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(UNCERTAIN_SCORE)
        self.region_edit = QLineEdit("")
        self.region_edit.setPlaceholderText("whole field, or y0:y1, x0:x1 (pixels)")
        self.region_edit.setToolTip("a region of a large scan: only its cells are opened; the rest of the field's "
                                    "review is kept and saved with it")
        view_button = QPushButton("this view")
        view_button.setToolTip("the region the viewer shows now")
        view_button.clicked.connect(self._region_from_view)
        self.start_button = QPushButton("Start / resume review")
        self.start_button.clicked.connect(self.start)
        form = form_of({"image": self.image_combo, "boxes": self.boxes_combo, "project": self.project_edit,
                        "reviewer": self.reviewer_edit, "uncertain below": self.threshold,
                        "region": button_grid([self.region_edit, view_button], 2)})
        form.addRow(self.start_button)
        self.setup = Collapsible("Set-up", form)

        self.keys_label = QLabel("")
        self.keys_label.setWordWrap(True)
        self.cell_label = QLabel("Start a review to see the cells least certain first.")
        self.cell_label.setWordWrap(True)
        self.queue_label = QLabel("")
        self.queue_label.setWordWrap(True)
        self.class_row = QGridLayout()
        self.buttons: dict[str, QPushButton] = {}
        for text, slot, tip in [("◀ Prev", self.previous, "P"), ("Next ▶", self.next, "N"),
                                ("Accept", self.accept, "A"), ("Not classed", self.not_classed, "R"),
                                ("Reject", self.reject, "Delete"), ("Accept rest", self.accept_certain_rest,
                                                                    "Shift+A: accept every certain unreviewed cell"),
                                ("Undo", self.undo, "Ctrl+Z"), ("Redo", self.redo, "Ctrl+Shift+Z"),
                                ("Sign", self.sign, "sign the field (after the uncertain cells are seen)")]:
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(lambda _=False, s=slot: self._guard(s))
            self.buttons[text.strip("◀▶ ")] = button
        actions = button_grid(list(self.buttons.values()), 3)
        self.flags_edit = QLineEdit()
        self.flags_edit.setPlaceholderText("labels of this cell (comma-separated)")
        self.flags_edit.setToolTip("multi-label morphology, e.g. echinocyte, stomatocyte; Enter records them "
                                   "(undoable)")
        self.flags_edit.editingFinished.connect(lambda: self._guard(self.set_flags))
        self.sign_label = QLabel("")
        self.sign_label.setWordWrap(True)

        self.gallery = CellGallery(on_focus=self.go_to, on_move=self.move_to_class)
        self.differential = DifferentialPanel()
        for label in self.differential.findChildren(QLabel):
            label.setWordWrap(True)  # its one-line title alone (303 px) widened the Count tab past a 320-px dock
        self.training = RetrainPanel(export=self.export, reviewer=self.reviewer)
        cell = QVBoxLayout()
        for item in (self.class_row, actions, self.cell_label, self.flags_edit, self.queue_label, self.sign_label,
                     self.keys_label):
            (cell.addLayout if isinstance(item, QLayout) else cell.addWidget)(item)
        cell.addStretch(1)
        cell_page = QWidget()
        cell_page.setLayout(cell)
        self.case_panel = CasePanel(self)
        count_page = QWidget()  # the case-wide differential (while a case is open) above the field's own
        count_layout = QVBoxLayout(count_page)
        count_layout.setContentsMargins(0, 0, 0, 0)
        count_layout.addWidget(self.case_panel.count)
        count_layout.addWidget(self.differential, 1)
        self.tabs = QTabWidget()
        self.tabs.setUsesScrollButtons(True)
        self._gallery_for: tuple[AnnotationTable, np.ndarray] | None = None
        self.tabs.currentChanged.connect(lambda k: k == GALLERY_TAB and self._attach_gallery())
        self.suggest_panel = SuggestPanel(self)
        for page, title in ((cell_page, "Cell"), (self.gallery, "Gallery"), (count_page, "Count"),
                            (self.training, "Retrain"), (self.case_panel, "Case"), (self.suggest_panel, "Suggest")):
            self.tabs.addTab(scrolling(page), title)
        self.training_line = QLabel("")  # the training's progress, visible whichever tab is open
        self.training_line.setWordWrap(True)
        self.training.status_changed = self.training_line.setText

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.setup)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.case_panel.line)
        layout.addWidget(self.training_line)
        self.setMinimumWidth(DOCK_WIDTH)
        self.setMaximumWidth(int(DOCK_WIDTH * 1.6))
        viewer.layers.events.inserted.connect(self._refresh_choices)
        viewer.layers.events.removed.connect(self._refresh_choices)
        self._refresh_choices()

    # -- set-up --------------------------------------------------------------------------------------------------
    def _refresh_choices(self, *_: Any) -> None:
        """Images to review, and their cells' source: Shapes of boxes, or Points with a class (grown into boxes)."""
        for combo, kinds, extra in ((self.image_combo, ("image",), []),
                                    (self.boxes_combo, ("shapes", "points"), [DETECT_NOW, NO_BOXES])):
            current = combo.currentText()
            combo.clear()
            names = [layer.name for layer in self.viewer.layers if layer._type_string in kinds
                     and not is_review_layer(layer) and (layer._type_string != "points" or "class" in layer.features)]
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
            if self.case_panel.data is not None:  # a field outside the case: the case closes first
                self.case_panel.close_case()
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
            table, outside = split_region(loaded[0], field.region) if field.region else (loaded[0], None)
            show_info(f"restored the review of {field.image['file_name']} ({len(table)} cells"
                      + (f" in region {region_text(field.region)}, {len(outside)} outside it" if outside else "")
                      + f", saved {field.project.sidecar(field.key)})")
            self._open(field, table, restored=True, outside=outside, log_id=field.project.log_ids.get(field.key))
        elif self.boxes_combo.currentText() == DETECT_NOW:
            if is_lazy(field.pixels):
                raise BloodcellInputError("a large scan is detected in the background (bloodcell detect, then "
                                          "bloodcell review import); its review then opens a region at a time")
            self.worker = detect_for_review(field, self)
        else:
            self._open(field, self._table_from_layer(field.image), restored=False)

    def _field(self) -> Field:
        """The chosen image layer as a field to review (see :func:`.review_field.field_of`)."""
        name = self.image_combo.currentText()
        if name:
            self.reviewer()
        field = field_of(self.viewer, name, self.project_edit.text(), self.region_edit.text())
        save_setting("review_project", str(field.project.folder))
        return field

    def set_region(self, region: tuple[int, int, int, int] | None) -> None:
        """Review only the cells of ``region`` (y0, y1, x0, x1 pixels) of the next field opened; None: all."""
        self.region_edit.setText(region_text(region))

    def _region_from_view(self) -> None:
        name = self.image_combo.currentText()
        if name in self.viewer.layers:
            self.set_region(view_region(self.viewer, self.viewer.layers[name]))

    def _open(self, field: Field, table: AnnotationTable, restored: bool, current: int | None = None,
              outside: Rows | None = None, log_id: str | None = None) -> None:
        """Show the table of ``field`` for review, at cell ``current`` (else the least certain), and keep it saved
        (``outside``: the field's cells outside the region under review; ``log_id``: the change log it was read
        with, which the autosave goes on appending to)."""
        if not self.case_panel.wants(field.key):
            return  # a detection finished after the case moved on to another field
        if field.region is not None and outside is None:  # detect now on a region of an in-memory field
            table, outside = split_region(table, field.region)
        # in a case the layers keep the case's name, so moving between fields renames nothing
        case = self.case_panel.data
        name = f"case {case.case.name}" if case is not None else Path(field.image["file_name"]).stem
        display, self.spare_display = self.spare_display, None
        if display is not None and display.shown.alive(self.viewer):
            display.show_table(table, name)
        else:
            display = ReviewDisplay(self.viewer, table, name, self.reviewer, self._default_class, self.spare_layers)
        self.spare_layers = None
        saver = Autosaver(field.project, field.key, table, field.image, background=True, outside=outside)
        if restored:
            saver.resume(log_id)
        else:
            saver.save_now()
        if field.image.get("path") is None:  # only in memory: kept with the review so it can be exported
            self._keeping = threading.Thread(target=keep_pixels, args=(field.project, field.image["digest"],
                                                                       field.pixels), daemon=True)
            self._keeping.start()
        self.session = Session(table, display, saver, field.image, field.pixels, field.project, field.key,
                               field.region, outside)
        self._hide_other_annotations(display)
        table.listeners.append(lambda kind, ids: self._update_status())
        display.current_changed = self._update_status
        if table.classes != self._class_row_for:
            self._build_class_row(table.classes)
        where = f" [{region_text(field.region)}]" if field.region else ""
        self.setup.set_summary(f"{field.image['file_name']}{where} · {self.reviewer_edit.text()}")
        self.setup.set_expanded(False)  # the review needs the room; the title shows what is under review
        if self.case_panel.data is None:  # in a case the reviewer stays on the tab they move through fields with
            self.tabs.setCurrentIndex(0)
        self._bind_keys([field.layer, *display.layers])
        self._gallery_for = (table, field.pixels)
        if self.case_panel.data is None or self.tabs.currentIndex() == GALLERY_TAB:
            self._attach_gallery()  # in a case, when its tab is shown: fields switch faster without thumbnails
        self.differential.attach(table)
        self.viewer.layers.selection.active = display.markers
        first = table.queue()
        display.set_current(current if current is not None and current in table else
                            int(first[0]) if len(first) else None)
        self.case_panel.session_opened(field.key, table)
        self._update_status()

    def _attach_gallery(self) -> None:
        if self._gallery_for is not None:
            # thumbnails when the gallery is shown (those of 100,000 cells took 2 s of the open)
            shown = self.gallery.isVisible() or self.tabs.currentIndex() == GALLERY_TAB
            self.gallery.attach(*self._gallery_for, refresh=shown)
            self._gallery_for = None

    def _hide_other_annotations(self, display: ReviewDisplay) -> None:
        """Boxes and points already shown (the source boxes, a ground-truth layer) would mix two sets of labels
        with the review's: hide them (the layer list's eye shows them again) and say so."""
        from napari.utils.notifications import show_info

        hidden = [layer for layer in self.viewer.layers if layer._type_string in ("shapes", "points", "vectors")
                  and not is_review_layer(layer) and layer.visible]
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
        if shapes._type_string == "points":  # point annotations: a box grown around each point
            from ..point_layers import table_from_points_layer

            return table_from_points_layer(shapes, image, self.viewer.layers[self.image_combo.currentText()].data)
        aset = shapes_to_annotation_set(shapes.data, {"metadata": shapes.metadata, "features": shapes.features},
                                        images=[image])
        return AnnotationTable.from_record(aset.images[0], aset.classes)

    def close_session(self, wait: bool = True) -> None:
        """Close the review; its last change is written first, or (``wait=False``, a case moving to the next
        field) by a background thread that :meth:`flush_closed` waits for, its layers left shown for the next."""
        if self.session is None:
            if wait and self.spare_display is not None:  # a case closed between two fields
                self.spare_layers, self.spare_display = self.spare_display.close(), None
            return
        if wait:
            self._unbind_keys()
        saver, display = self.session.saver, self.session.display
        if wait:
            self.spare_layers = display.close()
        else:
            display.release()
            self.spare_display = display
        self.session = None
        if wait:
            saver.close()
        else:
            self._closing = [t for t in self._closing if t.is_alive()]
            self._closing.append(threading.Thread(target=saver.close, name="bloodcell-close", daemon=True))
            self._closing[-1].start()

    def flush_closed(self, timeout: float = 10.0) -> None:
        """Wait until closed fields' autosaves are on disk (before a case is signed, reported or closed)."""
        for thread in list(self._closing):
            thread.join(timeout)

    # -- the queue: over the whole case while one is open ----------------------------------------------------------
    def next(self) -> None:
        if not self.case_panel.step(+1):
            super().next()

    def previous(self) -> None:
        if not self.case_panel.step(-1):
            super().previous()

    # -- keys ------------------------------------------------------------------------------------------------------
    def _key_actions(self, n_classes: int) -> dict[str, Any]:
        keys = {str(k + 1): (lambda k=k: self.assign(k)) for k in range(min(n_classes, 9))}
        keys.update({"A": self.accept, "Shift-A": self.accept_certain_rest, "R": self.not_classed, "Delete": self.reject, "Backspace": self.reject,
                     "N": self.next, "P": self.previous, "Control-Z": self.undo, "Control-Shift-Z": self.redo})
        return keys

    def _bind_keys(self, layers: list[Any]) -> None:
        wanted = (len(self.session.table.classes), tuple(id(layer) for layer in layers))
        if self._bound and wanted == self._bound_for:
            return  # the actions act on whichever session is open
        self._unbind_keys()
        for key, action in self._key_actions(len(self.session.table.classes)).items():
            for provider in [self.viewer, *layers]:
                provider.bind_key(key, lambda *_, a=action: self._guard(a), overwrite=True)
                self._bound.append((provider, key))
        self._bound_for = wanted

    def _unbind_keys(self) -> None:
        for provider, key in self._bound:
            try:
                provider.bind_key(key, None, overwrite=True)
            except (KeyError, ValueError, TypeError):
                pass
        self._bound.clear()

    def _build_class_row(self, classes: list[str]) -> None:
        self._class_row_for = list(classes)
        clear_layout(self.class_row)
        buttons = []
        for k, name in enumerate(classes[:9]):
            button = QPushButton(f"{k + 1} {name}")
            button.setToolTip(f"key {k + 1}: {name}")
            button.clicked.connect(lambda _=False, k=k: self._guard(lambda: self.assign(k)))
            buttons.append(button)
        button_grid(buttons, 3, self.class_row)
        mapping = " · ".join(f"{k + 1} {c}" for k, c in enumerate(classes[:9]))
        self.keys_label.setText(f"Keys: {mapping} · A accept · Shift+A accept the certain rest · R not classed · "
                                "Del reject · N/P next/previous · "
                                "Ctrl+Z / Ctrl+Shift+Z undo/redo. Draw a box in the 'edit' layer to add a cell.")

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
