"""The Review widget's Case tab: the fields of one slide reviewed, counted and signed as one case (issue 16).

A case (``core.cases``) names fields of the review project. Opening it reads every field's sidecar once, in the
background, and keeps the tables in memory; the open field's table is the very object its review edits, so the
field list, the case-wide queue (N/P: the least certain cell of the case next, opening its field) and the case
differential follow each key without rereading a sidecar. A field's image is read off the main thread into one
reused image layer and its review opens through the Review widget (sidecar restored, autosaved); the previous
field's last change is written by a background thread, so switching never waits for the disk. PageDown/PageUp
(bound on the viewer while a case is open) and a click move between fields.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QColor, QFont
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QPushButton,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...core.annotations import AnnotationTable
from ...core.case_stats import CaseStats
from ...core.cases import Case, Field, FieldStatus, case_statistics, field_status, list_cases
from ...core.errors import BloodcellInputError
from ...core.review_project import ReviewProject
from .case_count import CaseCount, compact_table
from .case_data import CaseData, field_pixels
from .case_gallery import CaseGallery
from .case_signoff import CaseSignOff
from .compact import button_grid, narrow_combo

if TYPE_CHECKING:
    from .review import ReviewWidget

STATE_TEXT = {"not started": ("new", None), "in review": ("review", "#e0b040"), "done": ("done ✓", "#40c060")}


def load_case(folder: Path, name: str) -> CaseData:
    """In a worker: the case with its tables, and napari's first-use costs (pandas, vispy's dashes, the unit
    registry, together over a second here) paid before the first field's layers are built on the main thread."""
    from ..layer_data import warm_up

    warm_up()
    try:
        from napari.utils._units import get_unit_registry

        get_unit_registry()
    except ImportError:  # a private helper of napari 0.9: only a speed-up
        pass
    return CaseData.load(folder, name)


def _returning_errors(fn: Callable[..., Any], *args: Any) -> Any:
    from .jobs import JobFailed

    try:
        return fn(*args)
    except BloodcellInputError as exc:
        return JobFailed(str(exc))


class CasePanel(CaseSignOff, QWidget):
    """Pick or create a case, add images, move between its fields, sign it and write its report."""

    def __init__(self, review: ReviewWidget) -> None:
        super().__init__()
        self.review, self.viewer = review, review.viewer
        self.data: CaseData | None = None
        self.live: str | None = None
        """Key of the field under review."""
        self.wanted: str | None = None
        """Key of the field being opened (its image may still be read)."""
        self.layer: Any = None
        """The one image layer every field of the case is shown in."""
        self.busy = 0
        """Background jobs in flight (tests and the benchmark wait for none)."""
        self._request = 0
        self._pending_cell: int | None = None
        self._bold: str | None = None
        """The field shown in bold in the list (the one under review)."""
        self.last_report: Path | None = None
        self.gallery = CaseGallery(self)
        """Fills the Review widget's Gallery tab with every field's cells while a case is open."""
        self._keys_bound = False
        self.case_combo = narrow_combo(QComboBox(), 12)
        self.buttons: dict[str, QPushButton] = {}
        for text, slot, tip in [("Open", self.open_case, "open the chosen case"),
                                ("New…", self.new_case, "create a case in the review project"),
                                ("Add images…", self.add_images, "add image files to the case as fields"),
                                ("Add folder…", self.add_folder, "add every image of a folder to the case"),
                                ("Sign case", self.sign_case, "sign the case: every field done, no uncertain cell "
                                                              "left"),
                                ("Report…", self.report, "write the case report (PDF and HTML)")]:
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(lambda _=False, s=slot: self._guard(s))
            self.buttons[text] = button
        top = QHBoxLayout()
        top.addWidget(QLabel("case"))
        top.addWidget(self.case_combo, 1)
        top.addWidget(self.buttons["Open"])
        self.field_list = compact_table(["field", "state", "cells", "unrev.", "uncert."],
                                    ["image of the slide", "not started / in review / done (signed)",
                                     "cells (rejected left out)", "cells not reviewed yet",
                                     "uncertain cells not reviewed yet (block the sign-off)"])
        self.field_list.setSelectionMode(QAbstractItemView.SingleSelection)
        self.field_list.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.field_list.setVerticalScrollBarPolicy(self.field_list.horizontalScrollBarPolicy())
        self.field_list.setMinimumHeight(150)
        self.field_list.setTextElideMode(Qt.ElideLeft)  # a slide's images share a prefix; their ends differ
        self.field_list.cellClicked.connect(lambda row, _col: self._guard(lambda: self.open_field(row)))
        self.sign_label = QLabel("")
        self.sign_label.setWordWrap(True)
        self.status = QLabel("Open a case, or create one and add a slide's images to it.")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addLayout(button_grid([self.buttons[t] for t in ("New…", "Add images…", "Add folder…")], 3))
        layout.addWidget(self.field_list, 1)
        layout.addWidget(QLabel("PageDown / PageUp: next / previous field · N / P: next / previous uncertain "
                                "cell of the case"))
        layout.itemAt(layout.count() - 1).widget().setWordWrap(True)
        layout.addLayout(button_grid([self.buttons["Sign case"], self.buttons["Report…"]], 2))
        layout.addWidget(self.sign_label)
        layout.addWidget(self.status)
        self.count = CaseCount(self._settings_changed)
        self.count.hide()
        self.line = QLabel("")
        """One line under the Review widget's tabs: the case, the field, the count so far."""
        self.line.setWordWrap(True)
        self.line.hide()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._live_changed)
        self._enable()
        review.project_edit.editingFinished.connect(self.refresh_names)
        self.refresh_names()

    # -- cases -----------------------------------------------------------------------------------------------------
    def project(self, create: bool = False) -> ReviewProject:
        return ReviewProject(Path(self.review.project_edit.text()).expanduser(), create=create)

    def refresh_names(self, select: str | None = None) -> None:
        current = select or self.case_combo.currentText()
        try:
            names = list_cases(self.project())
        except BloodcellInputError:
            names = []
        self.case_combo.clear()
        self.case_combo.addItems(names)
        if current in names:
            self.case_combo.setCurrentText(current)

    def open_case(self, name: str | None = None, keep: str | None = None) -> None:
        """Load the case in the background; then show its fields and open the one holding its least certain cell
        (or ``keep``, the field under review when the case is reloaded)."""
        name = name or self.case_combo.currentText()
        if not name:
            raise BloodcellInputError("choose a case (or create one with New…)")
        self.review.reviewer()
        folder = self.project().folder
        self.status.setText(f"opening case {name}…")
        self._background(lambda data: self._case_loaded(data, keep), load_case, folder, name)

    def _case_loaded(self, data: CaseData, keep: str | None) -> None:
        self.close_case()
        self.data = data
        self.gallery.reset()
        self.review.gallery.case = self.gallery  # the Gallery tab spans the case
        self.refresh_names(data.case.name)
        self.count.set_settings(data.case.settings.target, data.case.settings.wbc_per_litre)
        self.field_list.setRowCount(len(data.fields))
        for k, status in enumerate(data.statuses):
            self._show_row(k, status)
        self._hide_other_images()
        self._bind_keys()
        self.count.show()
        self.line.show()
        self._show_stats(data.stats)
        self._update_sign()
        self.status.setText(f"case {data.case.name}: {len(data.fields)} field(s), {len(data.queue)} cell(s) to review")
        if not data.fields:
            self.status.setText(f"case {data.case.name} has no fields yet: add images or a folder")
            return
        k = data.index(keep)
        if k >= 0:
            self.open_field(k)
        elif data.queue:
            key, cell, _ = data.queue[0]
            self.open_field(data.index(key), cell)
        else:
            todo = [k for k, s in enumerate(data.statuses) if s.state != "done"]
            self.open_field(todo[0] if todo else 0)

    def close_case(self) -> None:
        """Close the field under review (its autosave written) and leave case mode."""
        self._request += 1
        if self.data is not None and self.review.session is not None and self.live is not None:
            self.review.close_session()
        self.review.flush_closed()
        self._unbind_keys()
        self.data, self.live, self.wanted, self._bold = None, None, None, None
        self.review.gallery.case = None
        self.gallery.reset()
        self.field_list.setRowCount(0)
        self.count.hide()
        self.line.hide()
        self.sign_label.setText("")
        self._enable()

    def new_case(self, name: str | None = None) -> Case:
        if name is None:
            name, ok = QInputDialog.getText(self, "New case", "Case name (e.g. the slide or accession number):")
            if not ok or not name.strip():
                return None
        case = Case.create(self.project(create=True), name.strip(), by=self.review.reviewer())
        self.refresh_names(case.name)
        self.open_case(case.name)
        return case

    def add_images(self, paths: list[str | Path] | None = None) -> None:
        """Add images (files or folders) to the case in the background; their reviews, if any, are kept."""
        if paths is None:
            paths, _ = QFileDialog.getOpenFileNames(self, "Add images to the case", "",
                                                    "Images (*.png *.jpg *.jpeg *.tif *.tiff *.bmp)")
        if not paths:
            return
        name = self.data.case.name if self.data else self.case_combo.currentText()
        if not name:
            raise BloodcellInputError("open or create a case first")
        folder, keep = self.project().folder, self.live

        def add() -> int:
            return len(Case.open(ReviewProject(folder, create=False), name).add_images(list(paths)))

        self.status.setText(f"adding {len(paths)} item(s) to {name}…")
        self._background(lambda n: (self.status.setText(f"{n} field(s) added"), self.open_case(name, keep)), add)

    def add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of images to the case")
        if folder:
            self.add_images([folder])

    # -- fields ----------------------------------------------------------------------------------------------------
    def open_field(self, k: int, cell: int | None = None) -> None:
        """Show field ``k`` (its image read in the background) and open its review, at ``cell`` if given."""
        data = self.data
        if data is None or not 0 <= k < len(data.fields):
            return
        field = data.fields[k]
        s = self.review.session
        if field.key == self.live and s is not None:
            if cell is not None and cell in s.table:
                self.review.go_to(cell)
            return
        self._leave_field()
        self._request += 1
        request, self.wanted, self._pending_cell = self._request, field.key, cell
        self.field_list.selectRow(k)
        self.status.setText(f"opening {field.file_name}…")
        self._background(lambda result: self._pixels_read(request, k, result), field_pixels, data.case.project,
                         field, data.images.get(field.key))

    def step_field(self, direction: int) -> None:
        """PageDown/PageUp: the next or previous field of the case."""
        if self.data is None:
            return
        k = self.data.index(self.wanted or self.live) + direction
        if 0 <= k < len(self.data.fields):
            self.open_field(k)
        else:
            self.status.setText("first field of the case" if k < 0 else "last field of the case")

    def wants(self, key: str) -> bool:
        """Whether a review opening for ``key`` belongs here (a slow detection must not open a field left since)."""
        return self.data is None or key == self.wanted

    def _leave_field(self) -> None:
        s = self.review.session
        if self.review.worker is not None:  # a detection of the field being left
            self.review.worker.quit()
        if s is None or self.live is None:
            return
        if self._timer.isActive():  # the field's last change is not in the list and the count yet
            self._timer.stop()
            self._live_changed()
        table, saver = s.table, s.saver
        self.review.close_session(wait=False)
        # the gallery, count and status listeners of this review go; the autosaver removes itself once written
        table.listeners[:] = [f for f in table.listeners if f == saver._on_change]
        self.live = None

    def _pixels_read(self, request: int, k: int, result: tuple[np.ndarray, str]) -> None:
        if request != self._request or self.data is None:
            return  # another field was asked for meanwhile
        from .review import DETECT_NOW
        from .review import Field as ReviewField

        pixels, path = result
        data, field = self.data, self.data.fields[k]
        layer = self._show_image(pixels, field, path)
        image = data.images.get(field.key) or {"file_name": field.file_name, "width": int(pixels.shape[1]),
                                               "height": int(pixels.shape[0]), "path": path, "digest": field.digest}
        target = ReviewField(layer, pixels, image, data.case.project, field.key)
        table = data.tables.get(field.key)
        if table is None and self.review.boxes_combo.currentText() == DETECT_NOW:
            from .review_detect import detect_for_review

            self.status.setText(f"{field.file_name} has no cells yet: detecting them…")
            self.review.worker = detect_for_review(target, self.review)
            return
        self.review._open(target, table or AnnotationTable(list(data.classes())), restored=table is not None,
                          current=self._pending_cell)
        self.status.setText(f"field {k + 1} of {len(data.fields)}: {field.file_name}")

    def session_opened(self, key: str, table: AnnotationTable) -> None:
        """Called by the Review widget once a field's review is open: its table is the case's live entry. The
        counts are unchanged by a switch, so only the field list's highlight and the case line follow."""
        data = self.data
        if data is None or key not in data.tables:
            return
        fresh = data.tables.get(key) is not table  # a field detected just now, or started empty
        previous, self.live, self._bold = self._bold, key, key
        data.tables[key] = table
        table.listeners.append(lambda kind, ids: self._timer.start(250))
        if fresh:
            self._live_changed()
        for k in {data.index(previous), data.index(key)} - {-1}:
            self._show_row(k, field_status(data.fields[k], data.tables[data.fields[k].key]))
        self._show_stats(data.stats, line_only=True)

    def _show_image(self, pixels: np.ndarray, field: Field, path: str) -> Any:
        """The reused image layer shows the field (made again only if deleted or of another kind)."""
        from ..review_display import is_review_layer

        rgb = pixels.ndim == 3
        layer, layers = self.layer, self.viewer.layers
        name = f"case: {self.data.case.name}"  # the same for every field: the review layers name the field
        meta = {"path": path, "bloodcell_case": self.data.case.name}
        if layer is None or layer not in layers or layer.rgb != rgb:
            if layer is not None and layer in layers:
                layers.remove(layer)
            layer = self.layer = self.viewer.add_image(pixels, rgb=rgb, name=name, metadata=meta)
        else:
            shape_changed = layer.data.shape != pixels.shape
            layer.data = pixels
            if layer.name != name:  # a rename costs a layer-list update, so only for another case
                layer.name = name
            layer.metadata.update(meta)
            if not rgb:
                layer.reset_contrast_limits()
            if shape_changed:
                self.viewer.reset_view()
        review = [i for i, other in enumerate(layers) if is_review_layer(other)]
        at = layers.index(layer)
        if review and at > min(review):
            layers.move(at, min(review))  # under the review's outlines and markers
        return layer

    def _hide_other_images(self) -> None:
        for layer in self.viewer.layers:
            if layer._type_string == "image" and not layer.metadata.get("bloodcell_case") and layer.visible:
                layer.visible = False

    # -- the case-wide queue ---------------------------------------------------------------------------------------
    def step(self, direction: int) -> bool:
        """N/P over the whole case: the next (previous) unreviewed cell in the case queue, least certain first,
        opening its field. False when the case has no unreviewed cell (the field's own order is used then)."""
        data, s = self.data, self.review.session
        if data is None:
            return False
        queue = data.case_queue()
        if not queue:
            return False
        current = (self.live, s.display.current) if s is not None else None
        at = next((k for k, (key, cell, _) in enumerate(queue) if (key, cell) == current), None)
        key, cell, _ = queue[(at + direction) % len(queue)] if at is not None else queue[0 if direction > 0 else -1]
        self.open_field(data.index(key), cell)
        return True

    # -- counts and sign-off ---------------------------------------------------------------------------------------
    def _live_changed(self) -> None:
        data = self.data
        if data is None or self.live is None:
            return
        k = data.index(self.live)
        self._show_row(k, field_status(data.fields[k], data.tables[self.live]))
        self._show_stats(case_statistics(data.case, data.loaded()))
        self._update_sign()

    def _show_row(self, k: int, status: FieldStatus) -> None:
        text, colour = STATE_TEXT.get(status.state, (status.state, None))
        values = [Path(status.file_name).stem, text, str(status.cells), str(status.unreviewed),
                  str(status.uncertain_left)]
        for c, value in enumerate(values):
            item = QTableWidgetItem(value)
            if c == 1 and colour:
                item.setForeground(QColor(colour))
            if c == 0:
                item.setToolTip(f"{status.file_name}: {status.state}"
                                + (f", signed by {status.signed_by}" if status.signed_by else ""))
            if status.key == self._bold:
                font = QFont()
                font.setBold(True)
                item.setFont(font)
            self.field_list.setItem(k, c, item)

    def _show_stats(self, stats: CaseStats | None, line_only: bool = False) -> None:
        if stats is None or self.data is None:
            return
        if not line_only:
            from ..layers import class_colours

            self.data.stats = stats
            self.count.show_stats(stats, class_colours([r.name for r in stats.white]))
        k = self.data.index(self.wanted or self.live)
        self.line.setText(f"Case <b>{self.data.case.name}</b> · field {k + 1}/{len(self.data.fields)} · "
                          f"{stats.white_total}/{stats.target} white cells"
                          + (f" ({stats.remaining} to go)" if stats.remaining else " ✓"))

    def _settings_changed(self, target: int, wbc_per_litre: float | None) -> None:
        if self.data is None:
            return
        settings = self.data.case.settings
        settings.target, settings.wbc_per_litre = target, wbc_per_litre
        self.data.case.save()
        self._show_stats(case_statistics(self.data.case, self.data.loaded()))

    # -- plumbing --------------------------------------------------------------------------------------------------
    def _bind_keys(self) -> None:
        for key, direction in (("PageDown", 1), ("PageUp", -1)):
            self.viewer.bind_key(key, lambda *_, d=direction: self._guard(lambda: self.step_field(d)),
                                 overwrite=True)
        self._keys_bound = True

    def _unbind_keys(self) -> None:
        if self._keys_bound:
            for key in ("PageDown", "PageUp"):
                try:
                    self.viewer.bind_key(key, None, overwrite=True)
                except (KeyError, ValueError, TypeError):
                    pass
        self._keys_bound = False

    def _background(self, done: Callable[[Any], None], fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` off the main thread; its result goes to ``done``, a bad-input error to the user."""
        from napari.qt.threading import thread_worker

        from .jobs import JobFailed

        def returned(result: Any) -> None:
            if isinstance(result, JobFailed):
                self._error(result.message)
            else:
                self._guard(lambda: done(result))

        worker = thread_worker(_returning_errors, start_thread=False)(fn, *args)
        worker.returned.connect(returned)
        worker.errored.connect(lambda exc: self._error(f"{type(exc).__name__}: {exc}"))
        worker.finished.connect(self._finished)
        self.busy += 1
        worker.start()

    def _finished(self) -> None:
        self.busy -= 1

    def _guard(self, action: Callable[[], Any]) -> None:
        try:
            action()
        except BloodcellInputError as exc:
            self._error(str(exc))

    def _error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(f"<span style='color:#ff6060'>{message}</span>")
        show_error(message)
