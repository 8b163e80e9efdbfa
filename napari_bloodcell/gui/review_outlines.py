"""Which cells the review draws: all of them up to :data:`MAX_OUTLINED`, else those around the view.

Every outline is four segments of one Vectors layer, and napari rebuilds the whole layer's line mesh on any change
of it, colours included: 0.8 s for the 400,000 segments of 100,000 cells, and software OpenGL then draws all of
them on every frame; the Points layer of markers likewise re-sends all its points on a colour change (0.25 s for
100,000). A reviewer looks at a few cells at a time (the review centres six cells across), so a region's outlines
and markers are drawn only in a window around the view (the view and one view-width around it), redrawn a moment
after the view stops outside it; a rubber band selects among them as before. When even that window holds more than
:data:`MAX_OUTLINED` cells (a large part of a region of 100,000 in view, each box a few screen pixels wide) nothing is
drawn until the view comes closer: the image is what can be seen at that scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MAX_OUTLINED = 10_000
"""Cells drawn at most (a field of 10,000 cells is drawn whole, as before; beyond, a window around the view)."""
MARGIN_VIEWS = 1.0
"""The window drawn reaches this many view-widths past each side of the view."""
VIEW_DELAY_MS = 120
"""The window follows the view this long after the camera last moved (not on every frame of a pan)."""


def outline_vectors(boxes: np.ndarray) -> np.ndarray:
    """Four napari vectors (start row/col, direction) per xyxy box: its outline."""
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    corners = np.stack([np.stack([y1, x1], 1), np.stack([y1, x2], 1), np.stack([y2, x2], 1), np.stack([y2, x1], 1)], 1)
    ends = np.roll(corners, -1, axis=1)
    return np.stack([corners.reshape(-1, 2), (ends - corners).reshape(-1, 2)], axis=1)


def viewer_camera(viewer: Any) -> Any:
    """``viewer.scene.camera`` on napari 0.9+, ``viewer.camera`` before (0.9 deprecates the latter)."""
    scene = getattr(viewer, "scene", None)
    return getattr(scene, "camera", None) or viewer.camera


def canvas_size(viewer: Any) -> tuple[int, int]:
    """``viewer.canvas.size`` on napari 0.9+; the older private ``_canvas_size`` before."""
    size = getattr(getattr(viewer, "canvas", None), "size", None)
    if size is None:
        size = getattr(viewer, "_canvas_size", None)
    return tuple(size) if size is not None else (600, 800)


def view_extent(viewer: Any) -> tuple[float, float, float, float]:
    """y0, y1, x0, x1 of what the canvas shows, in world (image pixel) coordinates."""
    camera = viewer_camera(viewer)
    h, w = canvas_size(viewer)
    cy, cx = camera.center[-2:]
    zoom = max(float(camera.zoom), 1e-9)
    return cy - h / zoom / 2, cy + h / zoom / 2, cx - w / zoom / 2, cx + w / zoom / 2


class VisibleOutlines:
    """The table positions whose outlines are drawn, and the window they were chosen for."""

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.positions = np.zeros(0, dtype=np.int64)
        self.window: tuple[float, float, float, float] | None = None
        """None: every cell is drawn (a table of at most MAX_OUTLINED cells)."""
        self.crowded = False

    def choose(self, boxes: np.ndarray) -> np.ndarray:
        """Positions to outline for the view as it is now (sorted)."""
        n = len(boxes)
        if n <= MAX_OUTLINED:
            self.window, self.crowded = None, False
            self.positions = np.arange(n, dtype=np.int64)
            return self.positions
        y0, y1, x0, x1 = view_extent(self.viewer)
        for margin in (MARGIN_VIEWS, 0.05):  # a crowded view is drawn without the margin while it fits
            my, mx = margin * (y1 - y0), margin * (x1 - x0)
            self.window = (y0 - my, y1 + my, x0 - mx, x1 + mx)
            wy0, wy1, wx0, wx1 = self.window
            hit = np.flatnonzero((boxes[:, 2] >= wx0) & (boxes[:, 0] <= wx1) & (boxes[:, 3] >= wy0)
                                 & (boxes[:, 1] <= wy1))
            self.crowded = len(hit) > MAX_OUTLINED
            if not self.crowded:
                break
        self.positions = np.zeros(0, dtype=np.int64) if self.crowded else hit.astype(np.int64)
        return self.positions

    def stale(self, n: int) -> bool:
        """Whether the view has left the window drawn (or come close enough for a crowded window to be drawn)."""
        if n <= MAX_OUTLINED:
            return self.window is not None
        if self.window is None:
            return True
        y0, y1, x0, x1 = view_extent(self.viewer)
        wy0, wy1, wx0, wx1 = self.window
        if self.crowded:  # nothing drawn: worth looking again once the view is smaller
            return (y1 - y0) * 1.1 < (wy1 - wy0) * 0.9
        return not (y0 >= wy0 and y1 <= wy1 and x0 >= wx0 and x1 <= wx1)

    def index_of(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For table positions ``pos``: which of them are drawn (a mask) and their index among the drawn."""
        k = np.searchsorted(self.positions, pos)
        k = np.minimum(k, max(len(self.positions) - 1, 0))
        drawn = (self.positions[k] == pos) if len(self.positions) else np.zeros(len(pos), dtype=bool)
        return drawn, k[drawn]
