"""The Review widget's side panels: a thumbnail gallery per class (and per red-cell morphology) and the differential.

Both redraw from the annotation table a moment after it changes (one redraw per burst of key presses), and only
while they are visible (a hidden panel redraws when it is shown), so a class change on a thousand cells is not slowed
down by them. Thumbnails are cached per cell and box, and the differential's bars are painted with Qt (a matplotlib
redraw took about 200 ms of the main thread per key here).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from qtpy.QtCore import QRectF, QSize, Qt, QTimer
from qtpy.QtGui import QColor, QIcon, QImage, QPainter, QPen, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ...core.annotations import AnnotationTable
from ...core.crops import CROP_CONTEXT, field_range
from ...core.differential import (
    Differential,
    differential,
    white_cell_classes,
    write_differential_csv,
)
from ...core.errors import BloodcellInputError
from ...core.io.rgb import as_rgb
from ...core.morphology import canonical
from ..review_display import morphologies
from .case_gallery import KEY_ROLE, CaseGallery
from .compact import button_grid, clear_layout

THUMB = 56


def form_of(rows: dict[str, object]) -> QFormLayout:
    """A form with one labelled row per entry (widget or layout)."""
    form = QFormLayout()
    for label, field in rows.items():
        form.addRow(label, field)
    return form
NOT_CLASSED = "Not classed"


def thumbnail(image: np.ndarray, box: np.ndarray, size: int = THUMB, margin: float = CROP_CONTEXT,
              value_range: tuple[float, float] | None = None) -> QPixmap:
    """A square crop around the box, nearest-neighbour resized (fast enough for hundreds per refresh).

    16-bit and float fields become 8-bit as the classifier sees them (:func:`...core.io.rgb.as_rgb`, by the whole
    field's range: pass ``value_range`` from :func:`...core.crops.field_range` when drawing many cells of one
    field); a plain cast would wrap 16-bit values and show a 12-bit camera's cells as noise."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    h, w = image.shape[:2]
    rows = np.clip((cy - side / 2 + (np.arange(size) + 0.5) * side / size).astype(int), 0, h - 1)
    cols = np.clip((cx - side / 2 + (np.arange(size) + 0.5) * side / size).astype(int), 0, w - 1)
    if value_range is None:
        value_range = lazy_range(image)
    piece = np.asarray(image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])  # a lazy scan: only this bit is read
    crop = np.ascontiguousarray(as_rgb(piece[rows - rows[0]][:, cols - cols[0]], value_range))
    qimage = QImage(crop.data, size, size, 3 * size, QImage.Format_RGB888)
    return QPixmap.fromImage(qimage.copy())


def lazy_range(image) -> tuple[float, float] | None:
    """:func:`field_range` without reading a lazy (whole-slide) field whole: 8-bit needs none, else its central
    1024×1024 window sets it."""
    if isinstance(image, np.ndarray):
        return field_range(image)
    if np.dtype(image.dtype) == np.uint8:
        return None
    cy, cx = image.shape[0] // 2, image.shape[1] // 2
    return field_range(np.asarray(image[max(0, cy - 512):cy + 512, max(0, cx - 512):cx + 512]))


class CellGallery(QWidget):
    """Thumbnails of the cells of each class, least certain first. A click goes to the cell; right-click offers
    the classes and reclassifies it; selected thumbnails move together with the buttons below.

    Red-cell morphology: when classes are morphologies (Chula-RBC-12's 13 types) each has its class tab; a
    morphology recorded as a flag (a multi-label cell, or ``RBC`` flagged ``spherocyte``) that no class names gets
    its own tab (``◆ spherocyte``), made and removed as flags come and go. Tooltips name class and morphology."""

    def __init__(self, on_focus: Callable[[int], None], on_move: Callable[[np.ndarray, str | None], None],
                 limit: int = 300) -> None:
        super().__init__()
        self.on_focus, self.on_move, self.limit = on_focus, on_move, limit
        self.table: AnnotationTable | None = None
        self.image: np.ndarray | None = None
        self.tabs = QTabWidget()
        self.lists: dict[str, QListWidget] = {}
        self.morphology_lists: dict[str, QListWidget] = {}
        """Tabs of morphologies found in flags (not classes), by canonical name."""
        self.move_row = QGridLayout()
        self.note = QLabel("")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)
        layout.addWidget(QLabel("Move selected cells to:"))
        layout.addLayout(self.move_row)
        layout.addWidget(self.note)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._refresh_if_shown)
        self._stale = False
        self._icons: dict[tuple[int, tuple[float, ...]], QIcon] = {}
        self._range: tuple[float, float] | None = None
        """The field's intensity range for 16-bit/float thumbnails, found once per field."""
        self.case: CaseGallery | None = None
        """While a case is open: the tabs show the cells of every field of the case (see :mod:`.case_gallery`)."""
        self.tabs.currentChanged.connect(lambda _: self.case is not None and self.case.fill_shown())

    def _refresh_if_shown(self) -> None:
        if self.isVisible():
            self.refresh()
        else:
            self._stale = True

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        if self._stale:
            self.refresh()

    def _icon(self, object_id: int, box: np.ndarray) -> QIcon:
        """The cell's thumbnail, made once per cell and box (a moved box gets a new one)."""
        key = (object_id, tuple(np.round(box, 2).tolist()))
        icon = self._icons.get(key)
        if icon is None:
            icon = self._icons[key] = QIcon(thumbnail(self.image, box, value_range=self._range))
        return icon

    def attach(self, table: AnnotationTable, image: np.ndarray, refresh: bool = True) -> None:
        """Show the cells of ``table`` (``refresh=False``: when the gallery is next shown)."""
        self.table, self.image = table, image
        self._range = lazy_range(image)
        self._icons.clear()
        table.listeners.append(lambda kind, ids: self._timer.start(250))
        if list(self.lists) != [*table.classes, NOT_CLASSED]:  # a case's next field keeps the tabs and buttons
            self._build_tabs(table.classes)
        if refresh:
            self.refresh()
        else:
            self._stale = True

    def _build_tabs(self, classes: list[str]) -> None:
        shown = self.tabs.tabText(self.tabs.currentIndex()).split(" (")[0]  # kept when the next field is attached
        self.tabs.blockSignals(True)
        self.tabs.clear()
        self.lists.clear()
        self.morphology_lists.clear()
        clear_layout(self.move_row)
        moves = []
        for name in [*classes, NOT_CLASSED]:
            view = self._new_view()
            self.lists[name] = view
            self.tabs.addTab(view, name)
            button = QPushButton(name)
            button.clicked.connect(lambda _=False, n=name: self._move_selected(n))
            moves.append(button)
        button_grid(moves, 2, self.move_row)
        if shown in self.lists:
            self.tabs.setCurrentWidget(self.lists[shown])
        self.tabs.blockSignals(False)

    def _new_view(self) -> QListWidget:
        view = QListWidget()
        view.setViewMode(QListWidget.IconMode)
        view.setIconSize(QSize(THUMB, THUMB))
        view.setResizeMode(QListWidget.Adjust)
        view.setSelectionMode(QAbstractItemView.ExtendedSelection)
        view.setMinimumHeight(3 * (THUMB + 24))
        view.itemClicked.connect(self._clicked)
        view.setContextMenuPolicy(Qt.CustomContextMenu)
        view.customContextMenuRequested.connect(lambda point, v=view: self._menu(v, point))
        return view

    def _clicked(self, item: QListWidgetItem) -> None:
        key = item.data(KEY_ROLE)
        if self.case is not None and key:
            self.case.clicked(key, int(item.data(Qt.UserRole)))
        else:
            self.on_focus(int(item.data(Qt.UserRole)))

    def _morphology_tabs(self, cell_morphologies: list[list[str]]) -> None:
        """A tab per morphology that flags hold and no class names; tabs of morphologies gone are removed."""
        named = {canonical(c) for c in self.table.classes}
        present = sorted({m for ms in cell_morphologies for m in ms} - named)
        for name in [n for n in self.morphology_lists if n not in present]:
            view = self.morphology_lists.pop(name)
            self.tabs.removeTab(self.tabs.indexOf(view))
            view.deleteLater()
        for name in present:
            if name not in self.morphology_lists:
                self.morphology_lists[name] = view = self._new_view()
                self.tabs.addTab(view, f"◆ {name}")

    def _menu(self, view: QListWidget, point) -> None:
        """Right-click a thumbnail: a menu of the classes; the choice reclassifies it (and the other selected)."""
        item = view.itemAt(point)
        if item is None:
            return
        item.setSelected(True)
        menu = QMenu(view)
        for name in self.lists:
            menu.addAction(name, lambda n=name: self._move_selected(n, view))
        menu.popup(view.viewport().mapToGlobal(point))

    def _move_selected(self, name: str, view: QListWidget | None = None) -> None:
        view = view or self.tabs.currentWidget()
        ids = np.asarray([int(i.data(Qt.UserRole)) for i in view.selectedItems()], dtype=np.int64)
        if len(ids):
            self.on_move(ids, None if name == NOT_CLASSED else name)

    def refresh(self) -> None:
        table, image = self.table, self.image
        if table is None or image is None:
            return
        self._stale = False
        if self.case is not None:
            self.case.refresh(self)
            return
        order = table.queue(only_unreviewed=False)
        pos = table.positions(order)
        labels, reviews, boxes = table.col("label")[pos], table.col("review")[pos], table.col("box")[pos]
        names = [table.classes[int(k)] for k in labels]
        morphs = [morphologies(c, f) for c, f in zip(names, table.col("flags")[pos])]
        self._morphology_tabs([m for m, r in zip(morphs, reviews) if r != "rejected"])
        shown = 0
        for name, view in [*self.lists.items(), *self.morphology_lists.items()]:
            if name == NOT_CLASSED:
                pick = np.flatnonzero(reviews == "not_classed")
            elif name in self.morphology_lists:
                pick = np.flatnonzero([name in m and r != "rejected" for m, r in zip(morphs, reviews)])
            else:
                pick = np.flatnonzero((labels == table.classes.index(name)) & (reviews != "not_classed"))
            view.setUpdatesEnabled(False)
            view.clear()
            for k in pick[: self.limit]:
                item = QListWidgetItem(self._icon(int(order[k]), boxes[k]), "" if reviews[k] != "unreviewed" else "?")
                item.setData(Qt.UserRole, int(order[k]))
                extra = [m for m in morphs[k] if m != canonical(names[k])]
                item.setToolTip(f"cell {int(order[k])}: {names[k]}" + (f" · {', '.join(extra)}" if extra else "")
                                + f" — {reviews[k]}")
                view.addItem(item)
            view.setUpdatesEnabled(True)
            title = name if name in self.lists else f"◆ {name}"
            self.tabs.setTabText(self.tabs.indexOf(view), f"{title} ({len(pick)})")
            shown += min(len(pick), self.limit) if name in self.lists else 0
        total = int(table.active_mask().sum())
        self.note.setText("" if shown == total else f"showing the {self.limit} least certain cells of each class")


ROW_HEIGHT = 22


class PercentBars(QWidget):
    """One bar per class (its percentage, in its colour) with its 95% interval as a whisker, painted with Qt."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, float, float, float, str]] = []
        """(name, percent, low, high, colour) per class."""
        self.setFixedHeight(ROW_HEIGHT)

    def set_rows(self, rows: list[tuple[str, float, float, float, str]]) -> None:
        if rows != self.rows:
            self.rows = rows
            self.setFixedHeight(ROW_HEIGHT * max(1, len(rows)) + 4)
            self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if not self.rows:
            return
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        text = self.palette().windowText().color()
        metrics = painter.fontMetrics()
        label_w = min(max(metrics.horizontalAdvance(r[0]) for r in self.rows) + 8, self.width() // 2)
        row_h = min(float(ROW_HEIGHT), max(1.0, self.height() / len(self.rows)))
        plot_w = max(1.0, self.width() - label_w - 44)
        for k, (name, pct, low, high, colour) in enumerate(self.rows):
            top = k * row_h
            painter.setPen(text)
            painter.drawText(QRectF(0, top, label_w - 4, row_h), int(Qt.AlignRight | Qt.AlignVCenter),
                             metrics.elidedText(name, Qt.ElideRight, label_w - 4))
            if np.isnan(pct):
                continue
            bar = QRectF(label_w, top + row_h * 0.2, plot_w * pct / 100, row_h * 0.6)
            painter.fillRect(bar, QColor(colour))
            painter.setPen(QPen(text, 1))
            mid = top + row_h / 2
            x_low, x_high = label_w + plot_w * low / 100, label_w + plot_w * high / 100
            painter.drawLine(int(x_low), int(mid), int(x_high), int(mid))
            for x in (x_low, x_high):
                painter.drawLine(int(x), int(mid - row_h * 0.15), int(x), int(mid + row_h * 0.15))
            painter.drawText(QRectF(label_w + plot_w + 4, top, 40, row_h), int(Qt.AlignLeft | Qt.AlignVCenter),
                             f"{pct:.0f}%")
        painter.end()


class DifferentialPanel(QWidget):
    """Counts, percentages and exact 95% intervals per class, bars with the intervals, and CSV export."""

    def __init__(self) -> None:
        super().__init__()
        self.table: AnnotationTable | None = None
        self.diff: Differential | None = None
        self.grid = QTableWidget(0, 4)
        self.grid.setHorizontalHeaderLabels(["class", "n", "%", "95% CI"])
        self.grid.verticalHeader().setVisible(False)
        self.grid.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.bars = PercentBars()
        self.save_button = QPushButton("Save CSV…")
        self.save_button.clicked.connect(self._save)
        top = QVBoxLayout()  # stacked, not side by side: the dock is narrow
        top.addWidget(self.grid, 1)
        top.addWidget(self.bars)
        bottom = QHBoxLayout()
        bottom.addWidget(self.summary, 1)
        bottom.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("<b>Differential count</b> (95% exact intervals)"))
        layout.addLayout(top)
        layout.addLayout(bottom)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.refresh)
        self._shown: tuple | None = None

    def attach(self, table: AnnotationTable) -> None:
        self.table = table
        self._shown = None
        self._counted: list[str] | None = None
        table.listeners.append(self._changed)
        self.refresh()

    def _changed(self, kind: str, ids: np.ndarray) -> None:
        if kind not in ("class", "review", "flags", "move", "sign"):  # cells came or went: which classes count
            self._counted = None  # follows their classifier's types (found by a pass over every cell's attributes)
        self._timer.start(200)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        self._show()

    def refresh(self) -> None:
        """Count (cheap, always: the count is what gets saved) and show it if the panel is visible."""
        if self.table is None:
            return
        t = self.table
        if getattr(self, "_counted", None) is None:
            self._counted = white_cell_classes(t.classes, t.col("attributes"))
        self.diff = differential(t.classes, t.col("label"), t.col("review"), count_classes=self._counted)
        self.summary.setText(self._summary_text())
        self._show()

    def _show(self) -> None:
        d = self.diff
        if d is None or self.table is None or not self.isVisible():
            return
        key = (tuple((r.name, r.count) for r in d.rows), d.total, d.not_classed, d.unreviewed,
               tuple(d.apart.items()))
        if key == self._shown:
            return
        self._shown = key
        self.grid.setRowCount(len(d.rows))
        for r, row in enumerate(d.rows):
            values = [row.name, str(row.count), _pct(row.percent), f"{_pct(row.low)}–{_pct(row.high)}"]
            for c, text in enumerate(values):
                self.grid.setItem(r, c, QTableWidgetItem(text))
        self.grid.resizeColumnsToContents()
        from ..layers import class_colours

        colours = class_colours(self.table.classes)
        self.bars.set_rows([(r.name, r.percent, r.low, r.high, colours[r.name]) for r in d.rows])

    def _summary_text(self) -> str:
        d = self.diff
        also = "; ".join(f"{name} {n}" for name, n in d.apart.items())
        return (f"White-cell differential: {d.total} white cells; {d.not_classed} not classed "
                f"(excluded); {d.unreviewed} still unreviewed" + (" — draft count" if d.unreviewed else "")
                + (f". Counted apart: {also}" if also else ""))

    def _save(self) -> None:
        if self.diff is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save differential", "differential.csv", "CSV (*.csv)")
        if path:
            self.write(Path(path))

    def write(self, path: Path) -> Path | None:
        """Write the CSV (never over an existing file); an error is shown, not raised into Qt."""
        from napari.utils.notifications import show_error, show_info

        try:
            out = write_differential_csv(self.diff, path)
        except BloodcellInputError as exc:
            show_error(str(exc))
            return None
        show_info(f"differential written to {out}")
        return out


def _pct(value: float) -> str:
    return "–" if np.isnan(value) else f"{value:.1f}"
