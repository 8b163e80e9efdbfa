"""Layout helpers that keep the plugin's docked widgets laptop-sized.

napari's main window grows to the largest minimum size among its docked widgets, so one tall or wide widget takes
the canvas away (the Review widget alone once grew a 1366×768 window to 1127 px high and left the canvas 33% of its
width). Each widget therefore lives in a vertical scroll area, keeps its width near :data:`DOCK_WIDTH`, and puts
what is used less often behind tabs and a collapsible set-up section.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFrame,
    QGridLayout,
    QLayout,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

DOCK_WIDTH = 320
"""The width the plugin's widgets are laid out for: on a 1366-pixel screen napari's layer list (about 290 px)
plus this leaves the canvas more than half the window."""


def scrolling(content: QWidget) -> QScrollArea:
    """``content`` in a vertical scroll area: its natural height no longer sets the dock's minimum height."""
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)
    area.setWidget(content)
    area.setMinimumWidth(min(DOCK_WIDTH, content.minimumSizeHint().width() + 20))
    return area


def in_scroll_area(widget: QWidget, content_layout: QLayout) -> None:
    """Give ``widget`` a single scroll area holding ``content_layout`` (for widgets that are docked directly)."""
    inner = QWidget()
    inner.setLayout(content_layout)
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scrolling(inner))
    widget.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Expanding)


def narrow_combo(combo: QComboBox, characters: int = 14) -> QComboBox:
    """A combo box whose width does not follow its longest entry (a long layer or model name would widen the
    whole dock); the full text is in the drop-down and the tooltip."""
    combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(characters)
    combo.currentTextChanged.connect(combo.setToolTip)
    return combo


def button_grid(buttons: list[QPushButton], columns: int, grid: QGridLayout | None = None) -> QGridLayout:
    """Buttons in rows of ``columns`` (a row of nine class buttons would set the dock's width)."""
    grid = grid if grid is not None else QGridLayout()
    grid.setSpacing(3)
    for k, button in enumerate(buttons):
        button.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)  # text may be cut, never the layout widened
        button.setToolTip(button.toolTip() or button.text())
        grid.addWidget(button, k // columns, k % columns)
    return grid


def clear_layout(layout: QLayout) -> None:
    while layout.count():
        item = layout.takeAt(0)
        if item.widget() is not None:
            item.widget().deleteLater()


class Collapsible(QWidget):
    """A titled section that folds away (the review's set-up, once a review has started)."""

    def __init__(self, title: str, content: QLayout, expanded: bool = True) -> None:
        super().__init__()
        self.title = title
        self.toggle = QToolButton()
        self.toggle.setStyleSheet("QToolButton { border: none; font-weight: bold; }")
        self.toggle.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.toggle.setCheckable(True)
        self.toggle.toggled.connect(self.set_expanded)
        self.body = QWidget()
        self.body.setLayout(content)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.toggle)
        layout.addWidget(self.body)
        self.summary = ""
        self.toggle.setChecked(expanded)
        self.set_expanded(expanded)

    def set_expanded(self, expanded: bool) -> None:
        if self.toggle.isChecked() != expanded:
            self.toggle.setChecked(expanded)  # calls back here once
            return
        self.body.setVisible(expanded)
        self.toggle.setArrowType(Qt.DownArrow if expanded else Qt.RightArrow)
        self.toggle.setText(self.title if expanded or not self.summary else f"{self.title}: {self.summary}")

    def set_summary(self, text: str) -> None:
        self.summary = text
        self.set_expanded(self.toggle.isChecked())


def fit_docks(widget: QWidget, narrow_below: int = 1600, hide_layer_controls: bool = False) -> bool:
    """Once docked: give the dock holding ``widget`` its laid-out width and, on a window narrower than
    ``narrow_below`` (a laptop), napari's layer list and controls their minimum width, so the canvas keeps more
    than half the window. The docks can be dragged wider again. Returns whether anything was resized.

    napari's layer controls need 337 px, so on a 1366-px screen the canvas keeps at most about half the width
    beside them; ``hide_layer_controls`` (what ``bloodcell view --review`` does) hides that dock, which
    *Window ▸ layer controls* shows again, and the canvas keeps about 57%."""
    from qtpy.QtWidgets import QDockWidget, QMainWindow

    dock = widget.parent()
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parent()
    window = dock.parent() if dock is not None else None
    while window is not None and not isinstance(window, QMainWindow):
        window = window.parent()
    if dock is None or window is None:
        return False
    docks, sizes = [dock], [DOCK_WIDTH]
    if hide_layer_controls:
        for other in window.findChildren(QDockWidget):
            if other.objectName() == "layer controls":
                other.hide()
    if window.width() < narrow_below:
        for other in window.findChildren(QDockWidget):
            if other.objectName() in ("layer controls", "layer list") and other.isVisible():
                docks.append(other)
                sizes.append(other.minimumSizeHint().width())
    window.resizeDocks(docks, sizes, Qt.Horizontal)
    return True


class DockFitting:
    """Mix-in: a docked widget sized for a laptop screen (see :func:`fit_docks`) the first time it is shown."""

    _fitted = False

    def sizeHint(self):  # noqa: N802 - Qt's name
        from qtpy.QtCore import QSize

        return QSize(DOCK_WIDTH, super().sizeHint().height())

    def fit_laptop_screen(self, hide_layer_controls: bool = True) -> bool:
        """Called by ``bloodcell view --review``: the review's layout for a small screen (see :func:`fit_docks`)."""
        self._fitted = True
        return fit_docks(self, hide_layer_controls=hide_layer_controls)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if not self._fitted:
            from qtpy.QtCore import QTimer

            self._fitted = True
            QTimer.singleShot(0, lambda: fit_docks(self))
