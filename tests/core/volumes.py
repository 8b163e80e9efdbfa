"""Small labelled volumes for the segmentation tests: fast to make, with structures a tiny network can learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_bloodcell.core.io.nifti import save_nifti

TINY = {"features": [4, 8, 8], "head_features": 8}
"""A narrow HighRes3DNet (same stages and dilations) that trains in seconds on a CPU."""


def blob_case(seed: int, shape=(28, 24, 20)) -> tuple[np.ndarray, np.ndarray]:
    """A bright ball (label 1) and a dark box (label 2) on a noisy background, placed by ``seed``."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    centre = rng.uniform(8, np.asarray(shape) - 8)
    labels = np.zeros(shape, np.uint8)
    labels[np.linalg.norm(grid - centre, axis=-1) < 5] = 1
    lo = rng.integers(2, 6, size=3)
    box = tuple(slice(int(a), int(a) + 5) for a in lo)
    labels[box] = np.where(labels[box] == 0, 2, labels[box])
    image = 100 + 10 * rng.normal(size=shape)
    image[labels == 1] += 80
    image[labels == 2] -= 60
    return image.astype(np.float32), labels


def affine_for(spacing=(1.2, 0.9, 2.0), degrees: float = 12.0) -> np.ndarray:
    t = np.radians(degrees)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    affine[:3, 3] = [-20.0, 14.5, -7.25]
    return affine


def write_cases(folder: Path, n: int, layout: str = "msd", seed: int = 0, shape=(28, 24, 20)) -> Path:
    """``n`` cases as imagesTr/labelsTr (``msd``) or CASE + CASE_labels (``flat``), with a non-identity affine."""
    affine = affine_for()
    for k in range(n):
        image, labels = blob_case(seed + k, shape)
        name = f"case_{k + 1:03d}"
        if layout == "msd":
            save_nifti(image, affine, folder / "imagesTr" / f"{name}.nii.gz")
            save_nifti(labels, affine, folder / "labelsTr" / f"{name}.nii.gz", is_label_map=True)
        else:
            save_nifti(image, affine, folder / f"{name}.nii.gz")
            save_nifti(labels, affine, folder / f"{name}_labels.nii.gz", is_label_map=True)
    (folder / "LABELS.txt").write_text("0 background\n1 ball\n2 box\n")
    return folder
