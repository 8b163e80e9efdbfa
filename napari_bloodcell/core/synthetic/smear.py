"""A deterministic synthetic Wright-Giemsa blood smear with exact ground truth.

Cells are rendered as stain optical densities (Beer-Lambert: the light through two overlapping red cells is the
product of both transmissions), so touching and overlapping cells darken where they overlap as on a real slide.
Every cell keeps its full (amodal) box, computed from its own rendered mask, and its class; a visible-instance mask
is returned too. The geometry follows BCCD's magnification: red cells about 85-100 px across in a 640x480 field.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage

SMEAR_CLASSES = ("RBC", "Neutrophil", "Eosinophil", "Lymphocyte", "Monocyte", "Platelets")
WBC_TYPES = ("Neutrophil", "Eosinophil", "Lymphocyte", "Monocyte")
SUPERCATEGORY = {"RBC": "RBC", "Platelets": "Platelets", **{t: "WBC" for t in WBC_TYPES}}
WBC_FREQUENCIES = (0.6, 0.05, 0.25, 0.10)
"""Adult differential (neutrophils dominate), used when the WBC types are drawn at random."""

BACKGROUND = np.array([0.95, 0.91, 0.93])
# Transmission of each stain at full thickness, on white light; optical density = -log(transmission).
RBC_T = np.array([0.88, 0.55, 0.58])
NUCLEUS_T = {
    "Neutrophil": np.array([0.42, 0.22, 0.58]),
    "Eosinophil": np.array([0.45, 0.26, 0.58]),
    "Lymphocyte": np.array([0.34, 0.18, 0.50]),
    "Monocyte": np.array([0.56, 0.40, 0.70]),
}
CYTOPLASM_T = {
    "Neutrophil": np.array([0.93, 0.84, 0.91]),
    "Eosinophil": np.array([0.96, 0.84, 0.80]),
    "Lymphocyte": np.array([0.72, 0.84, 0.96]),
    "Monocyte": np.array([0.80, 0.81, 0.91]),
}
EOSIN_GRANULE_T = np.array([0.96, 0.50, 0.30])
PLATELET_T = np.array([0.62, 0.45, 0.76])


@dataclasses.dataclass
class SyntheticSmear:
    image: np.ndarray
    """(H, W, 3) uint8 RGB."""
    boxes: np.ndarray
    """(N, 4) float x1, y1, x2, y2 pixel edges: each cell's full extent, clipped to the field."""
    labels: np.ndarray
    """(N,) int64 indices into ``classes``."""
    instance_mask: np.ndarray
    """(H, W) int32: id k+1 where cell k is the top-most cell, 0 on background."""
    truncated: np.ndarray
    """(N,) bool: the cell is cut by the field's edge."""
    classes: tuple[str, ...] = SMEAR_CLASSES


class _Canvas:
    """Optical density per channel plus the top-most instance id per pixel."""

    def __init__(self, height: int, width: int) -> None:
        self.h, self.w = height, width
        self.od = np.zeros((height, width, 3))
        self.instances = np.zeros((height, width), dtype=np.int32)

    def window(self, cx: float, cy: float, radius: float) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
        r = int(math.ceil(radius)) + 3
        y0, y1 = max(0, int(cy) - r), min(self.h, int(cy) + r + 1)
        x0, x1 = max(0, int(cx) - r), min(self.w, int(cx) + r + 1)
        if y0 >= y1 or x0 >= x1:
            return None
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
        return slice(y0, y1), slice(x0, x1), xx + 0.5 - cx, yy + 0.5 - cy

    def add(self, sl: tuple[slice, slice], alpha: np.ndarray, transmission: np.ndarray, thickness=1.0) -> None:
        od = -np.log(np.clip(transmission, 1e-3, 1.0))
        self.od[sl] += (alpha * thickness)[..., None] * od


def _ellipse_alpha(dx, dy, a: float, b: float, theta: float, soft: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased coverage of an ellipse and its normalised radius (1 on the outline)."""
    c, s = math.cos(theta), math.sin(theta)
    u, v = dx * c + dy * s, -dx * s + dy * c
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    alpha = np.clip((1.0 - r) * min(a, b) / soft + 0.5, 0.0, 1.0)
    return alpha, r


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return noise / (noise.std() + 1e-9)


def _box_of(alpha: np.ndarray, sl: tuple[slice, slice]) -> list[float] | None:
    ys, xs = np.nonzero(alpha >= 0.5)
    if len(xs) == 0:
        return None
    return [sl[1].start + xs.min(), sl[0].start + ys.min(), sl[1].start + xs.max() + 1.0, sl[0].start + ys.max() + 1.0]


def _draw_rbc(canvas: _Canvas, rng, cx, cy, radius) -> tuple[np.ndarray, tuple[slice, slice]] | None:
    win = canvas.window(cx, cy, radius * 1.15)
    if win is None:
        return None
    sy, sx, dx, dy = win
    a, b = radius * rng.uniform(1.0, 1.12), radius * rng.uniform(0.9, 1.0)
    alpha, r = _ellipse_alpha(dx, dy, a, b, rng.uniform(0, math.pi), soft=1.2)
    pallor = rng.uniform(0.45, 0.7)
    centre = rng.uniform(0.35, 0.5)
    thickness = 1.0 - pallor * np.exp(-((r / centre) ** 2)) + 0.12 * np.exp(-(((r - 0.88) / 0.1) ** 2))
    canvas.add((sy, sx), alpha, RBC_T, thickness * rng.uniform(0.9, 1.1))
    return alpha, (sy, sx)


def _lobes_alpha(dx, dy, centres, radius, rng) -> np.ndarray:
    alpha = np.zeros_like(dx)
    for (lx, ly) in centres:
        lobe, _ = _ellipse_alpha(dx - lx, dy - ly, radius * rng.uniform(0.9, 1.15), radius * rng.uniform(0.75, 0.95),
                                 rng.uniform(0, math.pi))
        alpha = np.maximum(alpha, lobe)
    for (x0, y0), (x1, y1) in zip(centres[:-1], centres[1:]):  # thin chromatin strands between lobes
        length = math.hypot(x1 - x0, y1 - y0) + 1e-9
        t = np.clip(((dx - x0) * (x1 - x0) + (dy - y0) * (y1 - y0)) / length**2, 0, 1)
        dist = np.hypot(dx - (x0 + t * (x1 - x0)), dy - (y0 + t * (y1 - y0)))
        alpha = np.maximum(alpha, np.clip(radius * 0.18 - dist + 0.5, 0, 1))
    return alpha


def _nucleus_alpha(kind: str, dx, dy, radius: float, rng) -> np.ndarray:
    turn = rng.uniform(0, 2 * math.pi)
    if kind == "Neutrophil":
        n = int(rng.integers(3, 6))
        arc = rng.uniform(2.2, 3.4)
        centres = [(0.42 * radius * math.cos(turn + arc * (k / (n - 1) - 0.5)),
                    0.42 * radius * math.sin(turn + arc * (k / (n - 1) - 0.5))) for k in range(n)]
        return _lobes_alpha(dx, dy, centres, radius * 0.27, rng)
    if kind == "Eosinophil":
        off = 0.36 * radius
        centres = [(off * math.cos(turn), off * math.sin(turn)), (-off * math.cos(turn), -off * math.sin(turn))]
        return _lobes_alpha(dx, dy, centres, radius * 0.33, rng)
    if kind == "Lymphocyte":
        alpha, _ = _ellipse_alpha(dx - rng.uniform(-0.08, 0.08) * radius, dy - rng.uniform(-0.08, 0.08) * radius,
                                  radius * rng.uniform(0.78, 0.86), radius * rng.uniform(0.74, 0.82), turn)
        return alpha
    # Monocyte: a large oval with a bite out of one side, the kidney shape
    body, _ = _ellipse_alpha(dx, dy, radius * 0.68, radius * 0.5, turn)
    bx, by = 0.55 * radius * -math.sin(turn), 0.55 * radius * math.cos(turn)
    bite, _ = _ellipse_alpha(dx - bx, dy - by, radius * 0.36, radius * 0.3, turn)
    return np.clip(body - bite, 0, 1)


WBC_RADIUS = {"Neutrophil": (62, 72), "Eosinophil": (64, 74), "Lymphocyte": (46, 54), "Monocyte": (74, 86)}


def _draw_wbc(canvas: _Canvas, rng, kind: str, cx: float, cy: float, radius: float):
    win = canvas.window(cx, cy, radius * 1.05)
    if win is None:
        return None
    sy, sx, dx, dy = win
    wobble = 1 + 0.03 * _smooth_noise(rng, dx.shape, 6)
    cell, _ = _ellipse_alpha(dx * wobble, dy * wobble, radius, radius * rng.uniform(0.92, 1.0), rng.uniform(0, math.pi))
    cyto_thickness = 1.0 + 0.15 * _smooth_noise(rng, dx.shape, 3)
    if kind == "Monocyte":  # faint vacuoles
        for _ in range(int(rng.integers(3, 8))):
            vx, vy = rng.uniform(-0.6, 0.6, 2) * radius
            vac, _ = _ellipse_alpha(dx - vx, dy - vy, rng.uniform(3, 6), rng.uniform(3, 6), 0)
            cyto_thickness -= 0.6 * vac
    canvas.add((sy, sx), cell, CYTOPLASM_T[kind], np.clip(cyto_thickness, 0.2, 2) * 1.6)
    nucleus = _nucleus_alpha(kind, dx, dy, radius, rng) * cell
    chromatin = 1.0 + 0.22 * _smooth_noise(rng, dx.shape, 1.5) + 0.1 * _smooth_noise(rng, dx.shape, 4)
    canvas.add((sy, sx), nucleus, NUCLEUS_T[kind], np.clip(chromatin, 0.4, 2.0))
    if kind in ("Eosinophil", "Neutrophil"):
        n_gran = int((radius**2) * (0.11 if kind == "Eosinophil" else 0.03))
        gx, gy = rng.uniform(-1, 1, (2, n_gran)) * radius
        inside = np.hypot(gx, gy) < radius * 0.92
        granules = np.zeros_like(dx)
        size = 2.1 if kind == "Eosinophil" else 1.1
        for x, y in zip(gx[inside], gy[inside]):
            g, _ = _ellipse_alpha(dx - x, dy - y, size, size, 0, soft=0.8)
            granules = np.maximum(granules, g)
        granule_t = EOSIN_GRANULE_T if kind == "Eosinophil" else np.array([0.80, 0.70, 0.85])
        canvas.add((sy, sx), granules * cell * (1 - 0.7 * nucleus), granule_t, 0.8 if kind == "Eosinophil" else 0.5)
    return cell, (sy, sx)


def _draw_platelet(canvas: _Canvas, rng, cx, cy, radius):
    win = canvas.window(cx, cy, radius * 1.4)
    if win is None:
        return None
    sy, sx, dx, dy = win
    wobble = 1 + 0.18 * _smooth_noise(rng, dx.shape, max(radius / 3, 1))
    alpha, _ = _ellipse_alpha(dx * wobble, dy * wobble, radius, radius * rng.uniform(0.6, 0.95), rng.uniform(0, math.pi))
    grain = np.clip(1.0 + 0.35 * _smooth_noise(rng, dx.shape, 1.0), 0.3, 2)
    canvas.add((sy, sx), alpha, PLATELET_T, grain)
    return alpha, (sy, sx)


def _place(rng, width, height, radius, placed, min_gap_factor, margin, tries=60):
    """A centre whose disc overlaps earlier discs by at most ``1 - min_gap_factor`` of the radii sum."""
    for _ in range(tries):
        cx, cy = rng.uniform(-margin, width + margin), rng.uniform(-margin, height + margin)
        if all(math.hypot(cx - px, cy - py) >= min_gap_factor * (radius + pr) for px, py, pr in placed):
            return cx, cy
    return None


def generate_smear(
    seed: int = 0,
    width: int = 640,
    height: int = 480,
    n_rbc: int | None = None,
    wbc_types: list[str] | None = None,
    n_platelets: int | None = None,
) -> SyntheticSmear:
    """Render one field; the same seed and arguments always give the same pixels and boxes."""
    rng = np.random.default_rng(seed)
    if wbc_types is None:
        wbc_types = list(rng.choice(WBC_TYPES, size=int(rng.integers(1, 4)), p=WBC_FREQUENCIES))
    unknown = [t for t in wbc_types if t not in WBC_TYPES]
    if unknown:
        raise ValueError(f"unknown white-cell type {unknown[0]!r}; allowed: {', '.join(WBC_TYPES)}")
    area_scale = width * height / (640 * 480)
    n_rbc = int(rng.integers(22, 32) * area_scale) if n_rbc is None else n_rbc
    n_platelets = int(rng.integers(3, 8) * area_scale) if n_platelets is None else n_platelets

    canvas = _Canvas(height, width)
    cells: list[tuple[int, np.ndarray, tuple[slice, slice]]] = []
    wbc_discs, rbc_discs = [], []
    for kind in wbc_types:  # white cells are placed first, clear of each other and mostly inside the field
        radius = rng.uniform(*WBC_RADIUS[kind])
        spot = _place(rng, width, height, radius, [d[:3] for d in wbc_discs], 1.05, -radius * 0.6)
        if spot is not None:
            wbc_discs.append((*spot, radius, kind))
    for _ in range(n_rbc):  # red cells may touch and overlap a little, but keep off the white cells' middles
        radius = rng.uniform(40, 49)
        spot = _place(rng, width, height, radius, rbc_discs + [(x, y, r * 0.85) for x, y, r, _ in wbc_discs], 0.82, radius * 0.5)
        if spot is None:
            continue
        rbc_discs.append((*spot, radius))
        drawn = _draw_rbc(canvas, rng, *spot, radius)
        if drawn is not None:
            cells.append((SMEAR_CLASSES.index("RBC"), *drawn))
    for cx, cy, radius, kind in wbc_discs:
        drawn = _draw_wbc(canvas, rng, kind, cx, cy, radius)
        if drawn is not None:
            cells.append((SMEAR_CLASSES.index(kind), *drawn))
    for _ in range(n_platelets):
        radius = rng.uniform(6, 12)
        spot = _place(rng, width, height, radius, [(x, y, r) for x, y, r, _ in wbc_discs], 1.0, 0)
        if spot is None:
            continue
        drawn = _draw_platelet(canvas, rng, *spot, radius)
        if drawn is not None:
            cells.append((SMEAR_CLASSES.index("Platelets"), *drawn))

    boxes, labels, truncated = [], [], []
    for label, alpha, sl in cells:
        box = _box_of(alpha, sl)
        if box is None:
            continue
        k = len(boxes)
        canvas.instances[sl][alpha >= 0.5] = k + 1
        boxes.append(box)
        labels.append(label)
        truncated.append(box[0] <= 0 or box[1] <= 0 or box[2] >= width or box[3] >= height)

    yy, xx = np.mgrid[0:height, 0:width]
    vignette = 1.0 - 0.08 * (((xx - width / 2) / width) ** 2 + ((yy - height / 2) / height) ** 2) * 4
    illumination = BACKGROUND[None, None, :] * vignette[..., None] * (1 + 0.01 * _smooth_noise(rng, (height, width), 40))[..., None]
    rgb = illumination * np.exp(-canvas.od)
    rgb = ndimage.gaussian_filter(rgb, sigma=(0.8, 0.8, 0))
    rgb = rgb + rng.normal(0, 0.008, rgb.shape)
    image = np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)
    return SyntheticSmear(
        image=image,
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
        instance_mask=canvas.instances,
        truncated=np.asarray(truncated, dtype=bool),
    )
