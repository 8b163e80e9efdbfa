"""The classical detector: white cells, red cells and platelets from stain colour and shape, no weights needed.

It is the out-of-the-box default and the bootstrap for a deep detector (correct its boxes, export, train). Steps,
all scikit-image / SciPy:

1. **Optical density** per channel against the slide background (the 99th percentile of each channel), the
   colour-deconvolution view of a Romanowsky stain: red cells absorb mostly green, the azure/methylene-blue of
   nuclei and platelets also absorbs red. The red-channel OD therefore separates stained nuclei from red cells.
2. **Cell scale** from the data: the median peak of the distance transform of the cell mask is the red-cell
   radius ``r``; every size rule below is relative to it, so magnification does not matter.
3. **White cells**: red-channel OD above Otsu's level over cells and at least ``stain_factor`` × its median
   (red cells dominate the median), closed with a disk of ``r/4`` so the lobes of a neutrophil form one nucleus; nuclei larger
   than ``wbc_min_area``·πr² are white cells, boxed with the cytoplasm within ``r/2`` of the nucleus.
4. **Red cells**: the cell mask (holes = central pallor filled) minus white cells, split where discs touch by a
   watershed on the distance transform seeded at peaks at least ``0.6 r`` apart; regions of plausible size.
5. **Platelets**: small stained fragments (``platelet_area`` × πr²) outside white cells.

Confidence is a product of how typical the object's size, shape (solidity) and staining are, in 0..1, so the
lowest-scored objects are the ones a person should look at first.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage as ndi

CLASSES = ["WBC", "RBC", "Platelets"]


@dataclasses.dataclass
class ClassicalParams:
    stain_factor: float = 2.0
    """Lowest nuclear stain threshold as a multiple of the median red-channel optical density over cells (red
    cells dominate it); Otsu's level over cells is used when higher."""
    wbc_min_area: float = 0.3
    """Smallest white-cell nucleus, as a fraction of a red cell's area."""
    platelet_area: tuple[float, float] = (0.02, 0.3)
    """Platelet size range as fractions of a red cell's area."""
    rbc_area: tuple[float, float] = (0.3, 2.2)
    """Red-cell size range as fractions of the typical red cell's area (overlapping pairs reach ~2)."""
    cell_radius: float | None = None
    """Red-cell radius in pixels; estimated from each image when None."""


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def optical_density(rgb: np.ndarray) -> np.ndarray:
    img = rgb[..., :3].astype(np.float64)
    if img.max() > 1.5:
        img = img / (65535.0 if img.max() > 255 else 255.0)
    background = np.percentile(img.reshape(-1, 3), 99, axis=0)
    return -np.log(np.clip(img / np.maximum(background, 1e-3), 1e-3, 1.0))


def drop_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Remove connected components smaller than ``min_area`` pixels."""
    labels, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_area
    keep[0] = False
    return keep[labels]


def cell_mask(od: np.ndarray) -> np.ndarray:
    """Cells against the bright background: smoothed total OD, hysteresis between half Otsu's level and Otsu's
    level (pale red-cell centres stay attached to their rims), holes filled."""
    from skimage import filters, morphology

    total = ndi.gaussian_filter(od.sum(-1), 2)
    high = filters.threshold_otsu(total)
    mask = filters.apply_hysteresis_threshold(total, 0.5 * high, high)
    mask = drop_small(ndi.binary_opening(mask, morphology.disk(2)), 30)
    return ndi.binary_fill_holes(mask)


def estimate_radius(mask: np.ndarray) -> float:
    from skimage.feature import peak_local_max

    dist = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(dist, min_distance=5, threshold_abs=3, exclude_border=False)
    if not len(peaks):
        return 10.0
    return float(np.percentile(dist[tuple(peaks.T)], 75))


def tight_mask(green_od: np.ndarray) -> np.ndarray:
    """Red-cell stain above Otsu's level of the smoothed green OD, holes (pallor) filled: outer cell outlines."""
    from skimage import filters

    g = ndi.gaussian_filter(green_od, 2)
    level = filters.threshold_otsu(np.minimum(g, np.percentile(g, 95)))  # dark nuclei must not pull the level up
    return ndi.binary_fill_holes(drop_small(g > level, 30))


def _hough_discs(green_od: np.ndarray, allowed: np.ndarray, r: float) -> list[tuple[list[float], float]]:
    """Red cells as circles: Canny edges of the smoothed green optical density, Hough accumulators for radii
    0.6–1.4 r, peaks at least 0.9 r apart whose centre lies on a cell; the score is the fraction of the circle's
    perimeter that is edge."""
    from skimage import transform

    scale = min(1.0, 24.0 / max(r, 1e-3))  # work at a red-cell radius of about 24 px: fast and scale-free
    img = transform.rescale(green_od, scale, anti_aliasing=True) if scale < 1 else green_od
    rr = r * scale
    outline = tight_mask(img)
    edges = outline & ~ndi.binary_erosion(outline)
    radii = np.arange(max(3, int(0.6 * rr)), int(1.4 * rr) + 1, max(1, int(rr / 12)))
    acc = transform.hough_circle(edges, radii)
    dist = max(1, int(0.9 * rr))
    _, cx, cy, rad = transform.hough_circle_peaks(acc, radii, min_xdistance=dist, min_ydistance=dist,
                                                 threshold=0.25, total_num_peaks=4000)
    acc_vals = [acc[list(radii).index(q), y, x] for x, y, q in zip(cx, cy, rad)]
    out = []
    h, w = green_od.shape
    for x, y, q, a in zip(cx, cy, rad, acc_vals):
        X, Y, R = x / scale, y / scale, q / scale
        if not allowed[min(int(Y), h - 1), min(int(X), w - 1)]:
            continue
        box = [max(0.0, X - R), max(0.0, Y - R), min(float(w), X + R), min(float(h), Y + R)]
        out.append((box, float(min(1.0, a / 0.6))))
    return out


def _box(region_slice: tuple[slice, slice]) -> list[float]:
    ys, xs = region_slice
    return [float(xs.start), float(ys.start), float(xs.stop), float(ys.stop)]


def detect_classical(rgb: np.ndarray, params: ClassicalParams | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (xyxy), labels (indices into :data:`CLASSES`) and confidences for one RGB field."""
    from skimage import measure, morphology, segmentation
    from skimage.feature import peak_local_max

    p = params or ClassicalParams()
    if rgb.ndim != 3 or rgb.shape[-1] < 3:
        raise ValueError(f"the classical detector needs an RGB image; got shape {rgb.shape}")
    od = optical_density(rgb)
    cells = cell_mask(od)
    boxes: list[list[float]] = []
    labels: list[int] = []
    scores: list[float] = []
    if cells.sum() < 50:
        return np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros(0)
    r = p.cell_radius or estimate_radius(tight_mask(od[..., 1]))
    rbc_area = math.pi * r * r
    red = od[..., 0]
    from skimage import filters

    reference = float(np.median(red[cells]))  # red cells dominate the cell area
    low = p.stain_factor * max(reference, 1e-3)
    threshold = max(filters.threshold_otsu(red[cells]), low)
    stained = ndi.binary_opening(red > threshold, morphology.disk(1))

    # white cells: merged nuclear lobes plus a rim of cytoplasm
    nuclei = ndi.binary_closing(stained, morphology.disk(max(1, int(r / 2.5))))
    nuclei = ndi.binary_fill_holes(nuclei)
    nuc_labels = measure.label(nuclei)
    wbc_mask = np.zeros_like(cells)
    rim = morphology.disk(max(1, int(0.6 * r)))
    for reg in measure.regionprops(nuc_labels, intensity_image=red):
        if reg.area < p.wbc_min_area * rbc_area:
            continue
        # dilate within the nucleus' box plus the rim's reach: the same pixels as a whole-field dilation, and a
        # 51x51 rim over a whole field held the GIL (and the viewer) for 100-250 ms per white cell
        reach = rim.shape[0] // 2
        y0, x0, y1, x1 = reg.bbox
        win = (slice(max(0, y0 - reach), y1 + reach), slice(max(0, x0 - reach), x1 + reach))
        nucleus = nuc_labels[win] == reg.label
        body = ndi.binary_dilation(nucleus, rim) & (cells[win] | nucleus)
        wbc_mask[win] |= body
        ys, xs = np.nonzero(body)
        ys, xs = ys + win[0].start, xs + win[1].start
        boxes.append([float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)])
        labels.append(0)
        contrast = reg.intensity_mean / threshold
        size = min(1.0, reg.area / (0.6 * rbc_area))
        scores.append(_sigmoid(6 * (contrast - 1.15)) * (0.5 + 0.5 * size) * (0.6 + 0.4 * reg.solidity))

    # red cells: outer outlines (pallor filled), touching discs split by a distance-transform watershed
    rbc = drop_small(tight_mask(od[..., 1]) & ~ndi.binary_dilation(wbc_mask, morphology.disk(2)), int(0.1 * rbc_area))
    dist = ndi.distance_transform_edt(rbc)
    comp = measure.label(rbc)
    peaks = peak_local_max(dist, min_distance=max(2, int(0.7 * r)), threshold_abs=0.4 * r, labels=comp,
                           exclude_border=False)
    markers = np.zeros_like(comp)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    split = segmentation.watershed(-dist, markers, mask=rbc)
    lo, hi = p.rbc_area
    for reg in measure.regionprops(split):
        rel = reg.area / rbc_area
        if not lo <= rel <= hi:
            continue
        boxes.append(_box(reg.slice))
        labels.append(1)
        size = math.exp(-0.5 * (math.log(rel) / 0.45) ** 2)
        scores.append(size * reg.solidity**2)

    # platelets: small stained fragments away from white cells
    lo, hi = p.platelet_area
    fragments = ndi.binary_opening(red > low, morphology.disk(1))  # platelets stain paler than nuclei
    plt_labels = measure.label(fragments & ~ndi.binary_dilation(wbc_mask, morphology.disk(3)))
    for reg in measure.regionprops(plt_labels, intensity_image=red):
        rel = reg.area / rbc_area
        if not lo <= rel <= hi:
            continue
        ys, xs = reg.slice
        pad = max(1.0, 0.1 * r)
        h, w = red.shape
        boxes.append([max(0.0, xs.start - pad), max(0.0, ys.start - pad), min(w, xs.stop + pad), min(h, ys.stop + pad)])
        labels.append(2)
        contrast = reg.intensity_mean / low
        scores.append(_sigmoid(5 * (contrast - 1.1)) * reg.solidity * math.exp(-0.5 * (math.log(rel / 0.1) / 0.8) ** 2))

    return (np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(labels, dtype=np.int64),
            np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0))
