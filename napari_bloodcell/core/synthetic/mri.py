"""A deterministic synthetic T1-weighted head volume with a hippocampus-like label map.

Anatomy is laid out in millimetres in RAS space (x right, y anterior, z superior) and sampled through a
non-identity affine (anisotropic voxels, a head pitch of a few degrees, an origin off the corner), so that code
which ignores the affine misplaces things visibly. T1 contrast: fat-bright scalp, dark skull and CSF, grey matter
darker than white matter; a smooth bias field and Rician noise as in real scans.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage

MRI_LABELS = {0: "background", 1: "left hippocampus", 2: "right hippocampus"}


@dataclasses.dataclass
class SyntheticHead:
    image: np.ndarray
    """(X, Y, Z) int16 T1-like intensities."""
    labels: np.ndarray
    """(X, Y, Z) uint8: 1 left, 2 right hippocampus."""
    affine: np.ndarray
    label_names: dict[int, str] = dataclasses.field(default_factory=lambda: dict(MRI_LABELS))


def head_affine(spacing=(2.4, 2.2, 2.6), pitch_deg: float = 8.0, shape=(80, 96, 72)) -> np.ndarray:
    """Voxel -> RAS affine: spacing, a rotation about the left-right axis, and the volume centred near 0."""
    t = math.radians(pitch_deg)
    rot = np.array([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]])
    linear = rot @ np.diag(spacing)
    centre = linear @ ((np.asarray(shape) - 1) / 2)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = -centre + np.array([0.0, -12.0, 8.0])
    return affine


def _ellipsoid(p: np.ndarray, centre, radii) -> np.ndarray:
    """Normalised radius of points ``p`` (..., 3) in an axis-aligned ellipsoid."""
    return np.sqrt((((p - np.asarray(centre)) / np.asarray(radii)) ** 2).sum(-1))


def _hippocampus(p: np.ndarray, side: float) -> np.ndarray:
    """A curved, tapering tube along the antero-posterior axis in the medial temporal lobe."""
    y = p[..., 1]
    s = np.clip((y + 40.0) / 40.0, 0.0, 1.0)  # 0 at the tail (posterior), 1 at the head (anterior)
    cx = side * (26.0 + 4.0 * s)
    cz = -14.0 + 7.0 * (1 - s) ** 2
    radius = 3.0 + 3.5 * s
    inside_y = (y > -40.0) & (y < 2.0)
    d = np.sqrt((p[..., 0] - cx) ** 2 + ((p[..., 2] - cz) / 0.8) ** 2)
    return inside_y & (d < radius)


def generate_head(seed: int = 0, shape: tuple[int, int, int] = (80, 96, 72)) -> SyntheticHead:
    """Render the head; the same seed and shape always give the same voxels."""
    rng = np.random.default_rng(seed)
    affine = head_affine(shape=shape)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    p = ijk @ affine[:3, :3].T + affine[:3, 3]

    head = _ellipsoid(p, (0, -10, 5), (76, 95, 82))
    brain = _ellipsoid(p, (0, -10, 10), (64, 82, 66))
    wm = _ellipsoid(p, (0, -8, 14), (50, 68, 50))
    # Gyri: the grey/white boundary wanders
    wobble = 0.06 * np.sin(p[..., 0] / 6.0) * np.cos(p[..., 1] / 7.0) + 0.05 * np.sin(p[..., 2] / 5.0)
    image = np.zeros(shape)
    image[head < 1.0] = 0.95  # scalp fat, bright on T1
    image[head < 0.94] = 0.12  # skull, dark
    image[brain < 1.03] = 0.18  # CSF around the brain
    image[brain < 1.0] = 0.55  # grey matter
    image[(wm + wobble) < 1.0] = 0.82  # white matter
    for side in (-1.0, 1.0):  # lateral ventricles: two curved dark lobes beside the midline
        vent = _ellipsoid(p, (side * 9.0, -6.0, 22.0), (7.0, 30.0, 9.0))
        image[vent < 1.0] = 0.15
        temporal = _ellipsoid(p, (side * 28.0, -12.0, -12.0), (18.0, 38.0, 16.0))
        image[(temporal < 1.0) & (brain < 1.0)] = np.maximum(image[(temporal < 1.0) & (brain < 1.0)], 0.7)
    labels = np.zeros(shape, dtype=np.uint8)
    for value, side in ((1, -1.0), (2, 1.0)):  # RAS: negative x is the patient's left
        hippo = _hippocampus(p, side) & (brain < 1.0)
        labels[hippo] = value
        image[hippo] = 0.58
        # temporal horn of the ventricle hugs the hippocampus laterally
        horn = _hippocampus(p - np.array([side * 6.0, 0, 3.0]), side) & ~hippo & (brain < 1.0)
        image[horn] = 0.2
    image = ndimage.gaussian_filter(image, 0.7)
    bias = 1.0 + 0.12 * np.sin(p[..., 0] / 60.0 + 0.4) * np.cos(p[..., 2] / 70.0) + 0.06 * p[..., 1] / 100.0
    signal = image * bias
    sigma = 0.03
    noisy = np.sqrt((signal + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2)
    volume = np.clip(np.round(noisy * 1000), 0, 32767).astype(np.int16)
    return SyntheticHead(image=volume, labels=labels, affine=affine)
