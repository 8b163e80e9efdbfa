"""Patch sampling for 3D segmentation: where each training window comes from, and how it is distorted.

Samplers (NiftyNet's, which the thesis used):

* ``uniform``: any window of any volume, equally likely;
* ``weighted``: a voxel is the window centre with probability proportional to the inverse frequency of its class
  over the whole training set, so every class is centred equally often in total and rare structures (a
  hippocampus is well under 1% of a head) are seen as often as background; volumes holding more of a rare class
  are drawn more often;
* ``balanced``: a volume uniformly, then one of the classes present in it uniformly, then a voxel of that class.

Volumes smaller than the window are padded (image with its per-channel minimum, labels with background).
Augmentation follows the thesis: a rotation of up to ±10° about each axis and a scaling of ±10% per axis,
applied with one resampling (``torch.nn.functional.grid_sample``: trilinear for intensities, nearest for labels)
to a window cropped 30% larger than the patch, so rotated corners are filled with real anatomy rather than
repeated borders.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BloodcellInputError, nearest

SAMPLERS = ("uniform", "weighted", "balanced")
CONTEXT = 1.3


def pad_to(array: np.ndarray, shape: tuple[int, ...], value: float | np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Pad the last three axes symmetrically to at least ``shape``; returns the array and the low-side pads."""
    spatial = array.shape[-3:]
    extra = [max(0, s - n) for s, n in zip(shape, spatial)]
    if not any(extra):
        return array, [0, 0, 0]
    low = [e // 2 for e in extra]
    widths = [(0, 0)] * (array.ndim - 3) + [(lo, e - lo) for lo, e in zip(low, extra)]
    if np.ndim(value) == 0:
        return np.pad(array, widths, constant_values=value), low
    out = np.stack([np.pad(ch, widths[1:], constant_values=v) for ch, v in zip(array, value)])
    return out, low


def rotation_scaling(rng: np.random.Generator, max_degrees: float, max_scale: float) -> np.ndarray:
    """A random 3×3 map: rotations about the three axes within ±max_degrees, then per-axis scaling ±max_scale."""
    matrix = np.eye(3)
    for axis in range(3):
        t = math.radians(rng.uniform(-max_degrees, max_degrees))
        c, s = math.cos(t), math.sin(t)
        i, j = [a for a in range(3) if a != axis]
        rot = np.eye(3)
        rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
        matrix = rot @ matrix
    return matrix @ np.diag(rng.uniform(1 - max_scale, 1 + max_scale, size=3))


def resample_window(image: np.ndarray, labels: np.ndarray, matrix: np.ndarray,
                    patch: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The centred ``patch`` of a larger window after the voxel-space map ``matrix`` (about the window centre)."""
    crop = np.asarray(image.shape[-3:], dtype=np.float64)
    half_out, half_in = np.asarray(patch, dtype=np.float64) / 2, crop / 2
    theta_xyz = np.diag(1 / half_in) @ matrix @ np.diag(half_out)  # in array axis order (X, Y, Z)
    flip = [2, 1, 0]  # grid_sample's coordinates run (W, H, D): the reverse of the array axes
    theta = torch.zeros(1, 3, 4, dtype=torch.float32)
    theta[0, :, :3] = torch.as_tensor(theta_xyz[np.ix_(flip, flip)], dtype=torch.float32)
    size = (1, image.shape[0], *patch)
    grid = F.affine_grid(theta, list(size), align_corners=False)
    img = F.grid_sample(torch.from_numpy(np.ascontiguousarray(image))[None].float(), grid, mode="bilinear",
                        padding_mode="border", align_corners=False)[0]
    lab = F.grid_sample(torch.from_numpy(np.ascontiguousarray(labels))[None, None].float(), grid, mode="nearest",
                        padding_mode="zeros", align_corners=False)[0, 0]
    return img, lab.round().long()


class PatchSampler:
    """Draws (image, label) patch batches from normalised volumes whose labels are class indices 0..K-1."""

    def __init__(self, images: list[np.ndarray], labels: list[np.ndarray], n_classes: int,
                 patch: tuple[int, int, int], sampler: str = "weighted", augment: bool = True,
                 max_degrees: float = 10.0, max_scale: float = 0.1, seed: int = 0) -> None:
        if sampler not in SAMPLERS:
            raise BloodcellInputError(f"unknown sampler {sampler!r}{nearest(sampler, SAMPLERS)}; "
                                      f"allowed: {', '.join(SAMPLERS)}")
        if not images or len(images) != len(labels):
            raise BloodcellInputError(f"need one label map per image; got {len(images)} images, {len(labels)} maps")
        if len(patch) != 3 or min(patch) < 4:
            raise BloodcellInputError(f"patch must be three sizes of at least 4 voxels; got {patch}")
        self.patch = tuple(int(p) for p in patch)
        self.augment, self.sampler = augment, sampler
        self.max_degrees, self.max_scale = max_degrees, max_scale
        self.rng = np.random.default_rng(seed)
        self.window = tuple(int(math.ceil(p * CONTEXT)) if augment else p for p in self.patch)
        self.images, self.labels, self.where = [], [], []
        counts = np.zeros((len(images), n_classes), dtype=np.int64)
        for k, (img, lab) in enumerate(zip(images, labels)):
            img, _ = pad_to(img, self.window, img.reshape(img.shape[0], -1).min(1))
            lab, _ = pad_to(lab, self.window, 0)
            self.images.append(img)
            self.labels.append(lab)
            flat = lab.ravel()
            self.where.append([np.flatnonzero(flat == c) for c in range(n_classes)])
            counts[k] = [len(w) for w in self.where[-1]]
        self.counts = counts
        total = counts.sum(0).astype(np.float64)
        self.class_weight = np.where(total > 0, 1.0 / np.maximum(total, 1), 0.0)

    def _centre(self) -> tuple[int, np.ndarray]:
        n = len(self.images)
        if self.sampler == "uniform":
            k = int(self.rng.integers(n))
            return k, np.array([self.rng.integers(s) for s in self.labels[k].shape])
        if self.sampler == "weighted":
            mass = self.counts * self.class_weight  # per volume and class: voxels × weight
            k = int(self.rng.choice(n, p=mass.sum(1) / mass.sum()))
            c = int(self.rng.choice(mass.shape[1], p=mass[k] / mass[k].sum()))
        else:
            k = int(self.rng.integers(n))
            present = np.flatnonzero(self.counts[k] > 0)
            c = int(self.rng.choice(present))
        flat = self.where[k][c][self.rng.integers(len(self.where[k][c]))]
        return k, np.array(np.unravel_index(flat, self.labels[k].shape))

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One (C, *patch) float image and (*patch) int64 label patch."""
        k, centre = self._centre()
        shape = np.asarray(self.labels[k].shape)
        window = np.asarray(self.window)
        start = np.clip(centre - window // 2, 0, shape - window)
        sl = tuple(slice(int(s), int(s + w)) for s, w in zip(start, window))
        image, labels = self.images[k][(slice(None), *sl)], self.labels[k][sl]
        if not self.augment:
            return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(labels))
        matrix = rotation_scaling(self.rng, self.max_degrees, self.max_scale)
        return resample_window(image, labels, matrix, self.patch)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.draw() for _ in range(size)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def centre_class_rates(self, n: int = 2000) -> np.ndarray:
        """How often each class is at the window centre over ``n`` draws (what the sampler promises)."""
        hits = np.zeros(self.counts.shape[1])
        for _ in range(n):
            k, centre = self._centre()
            hits[self.labels[k][tuple(centre)]] += 1
        return hits / n
