"""The case-wide differential in the Review widget's Count tab (issue 16), drawn from a :class:`CaseStats`.

Labs count white cells over the whole slide towards a target (100 or 200): the panel says how many are counted and
how many more are needed, gives each type its count, percentage, exact 95% interval and, once the analyser's WBC
count is entered, its absolute count; types outside the reference range are flagged L/H. Not-classed (smudge)
cells and the classes outside the differential are listed apart, and red-cell morphology is graded when the case
has red cells. All numbers come from ``core.case_stats``, so the panel, ``bloodcell case`` and the report agree.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...core.case_stats import CaseStats
from ...core.cases import TARGET_COUNTS
from .review_panels import PercentBars

FLAG_COLOURS = {"low": "#6fa8ff", "high": "#ff7060"}


def compact_table(headers: list[str], tips: list[str] | None = None) -> QTableWidget:
    """A read-only table whose first column takes the spare width and the others fit their numbers."""
    grid = QTableWidget(0, len(headers))
    grid.setHorizontalHeaderLabels(headers)
    for k, tip in enumerate(tips or []):
        grid.horizontalHeaderItem(k).setToolTip(tip)
    grid.verticalHeader().setVisible(False)
    grid.setEditTriggers(QAbstractItemView.NoEditTriggers)
    grid.setSelectionMode(QAbstractItemView.NoSelection)
    grid.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    header = grid.horizontalHeader()
    header.setSectionResizeMode(0, QHeaderView.Stretch)
    for k in range(1, len(headers)):
        header.setSectionResizeMode(k, QHeaderView.ResizeToContents)
    return grid


def fill(grid: QTableWidget, rows: list[list[str]], colours: list[str | None] | None = None) -> None:
    """Replace the rows and size the table to them (the tab scrolls, not the table)."""
    grid.setRowCount(len(rows))
    for r, values in enumerate(rows):
        for c, text in enumerate(values):
            item = QTableWidgetItem(text)
            if c:
                item.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))
            if colours and colours[r]:
                item.setForeground(QColor(colours[r]))
            grid.setItem(r, c, item)
    grid.resizeRowsToContents()
    rows_h = sum(grid.rowHeight(r) for r in range(grid.rowCount()))
    grid.setFixedHeight(grid.horizontalHeader().height() + rows_h + 2 * grid.frameWidth() + 2)


def pct(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{value:.1f}"


class CaseCount(QWidget):
    """The case's differential; ``on_settings(target, wbc_per_litre)`` is called when the user changes them."""

    def __init__(self, on_settings: Callable[[int, float | None], None]) -> None:
        super().__init__()
        self.on_settings = on_settings
        self.stats: CaseStats | None = None
        self.title = QLabel("<b>Case differential</b> (all fields)")
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.target = QComboBox()
        self.target.addItems([str(t) for t in TARGET_COUNTS])
        self.target.setToolTip("white cells to count for the differential")
        self.wbc = QDoubleSpinBox()
        self.wbc.setRange(0.0, 999.99)
        self.wbc.setDecimals(2)
        self.wbc.setSingleStep(0.1)
        self.wbc.setSpecialValueText("not entered")
        self.wbc.setSuffix(" ×10⁹/L")
        self.wbc.setToolTip("the analyser's WBC count: gives each type an absolute count (0 = not entered)")
        form = QFormLayout()
        form.addRow("target", self.target)
        form.addRow("WBC count", self.wbc)
        self.grid = compact_table(["type", "n", "%", "95% CI", "10⁹/L"],
                                  ["white-cell type", "cells counted", "percent of the white cells (L/H: outside "
                                   "the reference range)", "exact 95% interval of the percentage",
                                   "absolute count from the WBC count"])
        self.bars = PercentBars()
        self.apart = QLabel("")
        self.apart.setWordWrap(True)
        self.red_title = QLabel("")
        self.red_title.setWordWrap(True)
        self.red_grid = compact_table(["morphology", "%", "95% CI", "grade"])
        self.reference = QLabel("")
        self.reference.setWordWrap(True)
        self.reference.setStyleSheet("color: gray;")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 6)
        for widget in (self.title, self.progress, self.summary):
            layout.addWidget(widget)
        layout.addLayout(form)
        for widget in (self.grid, self.bars, self.apart, self.red_title, self.red_grid, self.reference):
            layout.addWidget(widget)
        self.target.currentTextChanged.connect(self._changed)
        self.wbc.valueChanged.connect(self._changed)

    def set_settings(self, target: int, wbc_per_litre: float | None) -> None:
        """Show the case's settings without calling back."""
        for widget in (self.target, self.wbc):
            widget.blockSignals(True)
        if str(target) not in [self.target.itemText(k) for k in range(self.target.count())]:
            self.target.addItem(str(target))
        self.target.setCurrentText(str(target))
        self.wbc.setValue((wbc_per_litre or 0.0) / 1e9)
        for widget in (self.target, self.wbc):
            widget.blockSignals(False)

    def _changed(self, *_: object) -> None:
        wbc = self.wbc.value()
        self.on_settings(int(self.target.currentText()), wbc * 1e9 if wbc > 0 else None)

    def show_stats(self, stats: CaseStats, colours: dict[str, str]) -> None:
        self.stats = stats
        total, target = stats.white_total, stats.target
        self.progress.setRange(0, max(1, target))
        self.progress.setValue(min(total, target))
        self.progress.setFormat(f"{total} of {target} white cells")
        more = (f"<b>{stats.remaining} more</b> needed for {target}" if stats.remaining
                else f"target of {target} reached")
        draft = f"; {stats.unreviewed} still unreviewed (draft count)" if stats.unreviewed else ""
        self.summary.setText(f"{total} white cells counted across the case — {more}{draft}.")
        rows, tint = [], []
        for r in stats.white:
            flag = {"low": " L", "high": " H"}.get(r.flag or "", "")
            per = "–" if r.per_litre is None else f"{r.per_litre / 1e9:.2f}"
            rows.append([r.name, str(r.count), pct(r.percent) + flag, f"{pct(r.low)}–{pct(r.high)}", per])
            tint.append(FLAG_COLOURS.get(r.flag or ""))
        fill(self.grid, rows, tint)
        for k, r in enumerate(stats.white):
            if r.reference is not None:
                self.grid.item(k, 2).setToolTip(f"reference {r.reference[0]:g}–{r.reference[1]:g}%")
        self.bars.set_rows([(r.name, r.percent, r.low, r.high, colours.get(r.name, "#1f77b4")) for r in stats.white])
        apart = [f"Not classed / smudge: <b>{stats.not_classed}</b> (reported apart, not in the percentages)"]
        if stats.other:
            apart.append("Counted apart: " + ", ".join(f"{k} {v}" for k, v in stats.other.items()))
        self.apart.setText("<br>".join(apart))
        has_red = stats.red_total > 0
        self.red_title.setVisible(has_red)
        self.red_grid.setVisible(has_red and bool(stats.red))
        if has_red:
            none = "" if stats.red else ": no abnormal morphology recorded"
            self.red_title.setText(f"<b>Red-cell morphology</b> ({stats.red_total} red cells){none}")
            fill(self.red_grid, [[g.name, pct(g.percent), f"{pct(g.low)}–{pct(g.high)}", g.grade or "–"]
                                 for g in stats.red])
        self.reference.setText(f"Reference ranges: {stats.reference_source}.")
