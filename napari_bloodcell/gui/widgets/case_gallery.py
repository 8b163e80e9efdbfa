"""The Gallery tab over a whole case: the cells of every field of the case per class, least certain first.

While a case is open, :class:`~.review_panels.CellGallery` hands its refresh to :class:`CaseGallery`, which
collects the cells from the tables the Case tab keeps in memory (no sidecar is read). Only the class tab on
screen gets thumbnails (at most the gallery's limit, least certain first); the other tabs show their counts.
Thumbnails of another field need its image: those are read off the main thread, one field after another, kept
in a small LRU (``IMAGE_CACHE`` fields), and every thumbnail made is cached, so a tab shown again costs nothing.
Clicking a thumbnail of another field opens that field on that cell; only the open field's cells can be selected
and moved to another class (the other fields' tables are not under review).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import QListWidgetItem

from ...core.crops import field_range
from ...core.morphology import canonical
from ..review_display import morphologies
from .case_data import field_pixels

if TYPE_CHECKING:
    from .case_panel import CasePanel
    from .review_panels import CellGallery

IMAGE_CACHE = 8
"""Field images kept in memory for thumbnails (a 640×480 field is about 1 MB)."""
KEY_ROLE = Qt.UserRole + 1
"""Item data: the key of the field a thumbnail belongs to."""
NOT_CLASSED = "Not classed"
BATCH = 60
"""Thumbnails added per event-loop turn (about 10 ms of the main thread here)."""


@dataclasses.dataclass
class Cell:
    """One thumbnail of the case gallery."""

    key: str
    id: int
    box: np.ndarray
    review: str
    name: str
    morphologies: list[str]
    order: float


def _placeholder() -> QIcon:
    pixmap = QPixmap(8, 8)
    pixmap.fill(QColor("#404040"))
    return QIcon(pixmap)


class CaseGallery:
    """Fills a :class:`CellGallery`'s tabs with the cells of every field of the open case."""

    def __init__(self, panel: CasePanel) -> None:
        self.panel = panel
        self.gallery: CellGallery | None = None
        self.images: OrderedDict[str, tuple[np.ndarray, Any]] = OrderedDict()
        """Field key → pixels and intensity range, the most recently used last."""
        self.icons: dict[tuple, QIcon] = {}
        self.cells: dict[str, list[Cell]] = {}
        """Tab name → its cells, least certain first."""
        self._reading: set[str] = set()
        self._by_field: dict[str, tuple[tuple, list[Cell]]] = {}
        self._files: dict[str, str] = {}
        self._generation = 0
        self._filling: tuple[Any, list[Cell]] | None = None
        """The tab on screen and its cells, whose thumbnails arriving images make."""
        """Bumped by every refresh and tab fill: a batch of an older fill then stops."""
        self._blank: QIcon | None = None

    def reset(self) -> None:
        """A case opened or closed: its images and thumbnails go."""
        self.images.clear()
        self.icons.clear()
        self.cells.clear()
        self._by_field.clear()
        self._filling = None

    def remember(self, key: str, pixels: np.ndarray) -> None:
        """A field's image, read (by the Case tab or here): kept, the least recently used beyond the cache."""
        self.images[key] = (pixels, field_range(pixels))
        self.images.move_to_end(key)
        while len(self.images) > IMAGE_CACHE:
            self.images.popitem(last=False)

    # -- collecting ----------------------------------------------------------------------------------------------
    def refresh(self, gallery: CellGallery) -> None:
        """Every field's cells sorted into the gallery's tabs (counts on every tab, thumbnails on the shown one)."""
        self.gallery = gallery
        data = self.panel.data
        if data is None or gallery.table is None:
            return
        if self._open_key() is not None and gallery.image is not None:
            self.remember(self._open_key(), gallery.image)
        self._files = {f.key: f.file_name for f in data.fields}
        self._generation += 1
        cells = [c for f in data.fields for c in self._field_cells(f.key, data.tables.get(f.key))]
        cells.sort(key=lambda c: c.order)
        gallery._morphology_tabs([c.morphologies for c in cells if c.review != "rejected"])
        self.cells = {name: [] for name in [*gallery.lists, *gallery.morphology_lists]}
        for c in cells:
            if c.review == "rejected":
                continue
            tab = NOT_CLASSED if c.review == "not_classed" else c.name
            if tab in self.cells:
                self.cells[tab].append(c)
            for m in c.morphologies:
                if m in gallery.morphology_lists:
                    self.cells[m].append(c)
        for name, view in [*gallery.lists.items(), *gallery.morphology_lists.items()]:
            title = name if name in gallery.lists else f"◆ {name}"
            gallery.tabs.setTabText(gallery.tabs.indexOf(view), f"{title} ({len(self.cells[name])})")
            view.setProperty("bloodcell_filled", False)
        total = sum(len(v) for k, v in self.cells.items() if k in gallery.lists)
        fields = len({c.key for c in cells})
        gallery.note.setText(f"{total} cells of {fields} field(s) of the case; the open field's cells can be moved")
        self.fill_shown()

    def _field_cells(self, key: str, table: Any) -> list[Cell]:
        """A field's cells, remade only when its table changed (only the open field's changes while a case is
        open, so a refresh after a key press redoes one field of fifty)."""
        if table is None or not len(table):
            return []
        stamp = (id(table), table.revision, len(table))
        known = self._by_field.get(key)
        if known is None or known[0] != stamp:
            known = self._by_field[key] = (stamp, self._collect(key, table))
        return known[1]

    def _collect(self, key: str, table: Any) -> list[Cell]:
        order = table.queue(only_unreviewed=False)
        pos = table.positions(order)
        labels, reviews, boxes = table.col("label")[pos], table.col("review")[pos], table.col("box")[pos]
        flags, certainty = table.col("flags")[pos], table.uncertainty()[pos]
        names = [table.classes[int(k)] for k in labels]
        return [Cell(key, int(order[k]), boxes[k], str(reviews[k]), names[k], morphologies(names[k], flags[k]),
                     float(certainty[k])) for k in range(len(order))]

    # -- thumbnails ----------------------------------------------------------------------------------------------
    def fill_shown(self) -> None:
        """Items for the tab on screen (once per refresh), their thumbnails from the cache or the field's image,
        added ``BATCH`` at a time between event-loop turns so the viewer never waits for a whole tab."""
        gallery = self.gallery
        if gallery is None or self.panel.data is None:
            return
        view = gallery.tabs.currentWidget()
        name = next((n for n, v in [*gallery.lists.items(), *gallery.morphology_lists.items()] if v is view), None)
        if self._filling is not None and self._filling[0] is not view and not all(
                self._icon_key(c) in self.icons for c in self._filling[1]):
            self._filling[0].setProperty("bloodcell_filled", False)  # left with placeholders: filled again
        if name is None or view.property("bloodcell_filled"):
            return
        view.setProperty("bloodcell_filled", True)
        view.clear()
        cells = self.cells.get(name, [])[: gallery.limit]
        self._generation += 1
        self._filling = (view, cells)
        self._read(list(dict.fromkeys(c.key for c in cells if self._icon_key(c) not in self.icons
                                      and c.key not in self.images and c.key not in self._reading)))
        self._fill_batch(self._generation, view, cells, 0)

    def _fill_batch(self, generation: int, view: Any, cells: list[Cell], start: int) -> None:
        if generation != self._generation or self.panel.data is None:
            return  # refreshed, or another tab shown, since
        live, missing = self._open_key(), []
        view.setUpdatesEnabled(False)
        for c in cells[start:start + BATCH]:
            icon = self._icon(c)
            if icon is None and c.key not in self._reading:  # its image left the cache since the fill began
                missing.append(c.key)
            item = QListWidgetItem(icon or self._placeholder(), "" if c.review != "unreviewed" else "?")
            item.setData(Qt.UserRole, c.id)
            item.setData(KEY_ROLE, c.key)
            if c.key != live:  # another field's cell: a click opens it; it cannot be moved from here
                item.setFlags(Qt.ItemIsEnabled)
            extra = [m for m in c.morphologies if m != canonical(c.name)]
            item.setToolTip(f"{self._files.get(c.key, c.key)} · cell {c.id}: {c.name}"
                            + (f" · {', '.join(extra)}" if extra else "") + f" — {c.review}")
            view.addItem(item)
        view.setUpdatesEnabled(True)
        self._read(list(dict.fromkeys(missing)))
        if start + BATCH < len(cells):
            from qtpy.QtCore import QTimer

            QTimer.singleShot(0, lambda: self._fill_batch(generation, view, cells, start + BATCH))

    def _open_key(self) -> str | None:
        """The field under review (while its review opens, the gallery is attached before the case hears of it)."""
        return self.panel.live or self.panel.wanted

    def _placeholder(self) -> QIcon:
        if self._blank is None:
            self._blank = _placeholder()
        return self._blank

    @staticmethod
    def _icon_key(c: Cell) -> tuple:
        return c.key, c.id, tuple(np.round(c.box, 2).tolist())

    def _icon(self, c: Cell) -> QIcon | None:
        """The cell's cached thumbnail, else made from its field's image when that is in memory."""
        key = self._icon_key(c)
        icon = self.icons.get(key)
        if icon is None and c.key in self.images:
            from .review_panels import thumbnail

            pixels, value_range = self.images[c.key]
            self.images.move_to_end(c.key)
            icon = self.icons[key] = QIcon(thumbnail(pixels, c.box, value_range=value_range))
        return icon

    def _read(self, keys: list[str]) -> None:
        """Read the fields' images in a worker, one after another; each fills its thumbnails as it arrives."""
        data = self.panel.data
        if not keys or data is None:
            return
        from napari.qt.threading import thread_worker

        jobs = [(k, data.fields[data.index(k)], data.images.get(k)) for k in keys if data.index(k) >= 0]
        project, case = data.case.project, data

        def read():
            for key, field, image in jobs:
                try:
                    yield key, field_pixels(project, field, image)[0]
                except Exception:  # noqa: BLE001 - a missing or changed image leaves its placeholder
                    yield key, None

        self._reading.update(keys)
        worker = thread_worker(read, start_thread=False)()
        worker.yielded.connect(lambda result: self._arrived(case, *result))
        worker.finished.connect(lambda: self._reading.difference_update(keys))
        worker.start()

    def _arrived(self, case: Any, key: str, pixels: np.ndarray | None) -> None:
        """A field's image read: thumbnails for its cells in the tab being filled (added or still to come)."""
        self._reading.discard(key)
        if pixels is None or case is not self.panel.data or self._filling is None:
            return
        self.remember(key, pixels)
        view, cells = self._filling
        icons = {c.id: self._icon(c) for c in cells if c.key == key}
        for row in range(view.count()):
            item = view.item(row)
            if item.data(KEY_ROLE) == key and icons.get(int(item.data(Qt.UserRole))) is not None:
                item.setIcon(icons[int(item.data(Qt.UserRole))])

    # -- clicks --------------------------------------------------------------------------------------------------
    def clicked(self, key: str, cell: int) -> None:
        """A thumbnail clicked: its cell, in its field (opened first when it is another one)."""
        data = self.panel.data
        if data is None:
            return
        if key == self._open_key():
            self.panel.review.go_to(cell)
        else:
            self.panel.open_field(data.index(key), cell)
