"""Augmentation for detectors that must hold up in another lab: stain, lamp, focus, sensor noise and magnification.

A model trained on one lab's photos learns that lab's stain and scale. Following Tellez et al. (2019,
"Quantifying the effects of data augmentation and stain color normalization"), the stain is perturbed in the
haematoxylin-eosin-DAB space of scikit-image's colour deconvolution (``rgb2hed``): each channel is scaled by
``1 ± sigma`` and shifted by ``± sigma``. Romanowsky stains are not H&E, but the deconvolution still separates the
blue-purple (nuclear) and pink (cytoplasm, red cell) components, which is what varies between smear labs. HSV
jitter, blur, Gaussian noise and a wide random scale (0.5–1.6×, over the magnifications of the public sets) come
from ``torchvision.transforms.v2`` so boxes follow.
"""

from __future__ import annotations

import numpy as np
import torch


def hed_jitter(image: torch.Tensor, sigma: float = 0.05, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uint8 CHW RGB tensor with its H, E and D stain amounts scaled by ``U(1-sigma, 1+sigma)`` and shifted by
    ``U(-sigma, sigma)`` (per image)."""
    from skimage.color import hed2rgb, rgb2hed

    alpha = 1.0 + (torch.rand(3, generator=generator).numpy() * 2 - 1) * sigma
    beta = (torch.rand(3, generator=generator).numpy() * 2 - 1) * sigma
    rgb = image.permute(1, 2, 0).numpy()
    hed = rgb2hed(rgb)
    # shift relative to each channel's spread, so the jitter means the same on pale and dense smears
    spread = hed.reshape(-1, 3).std(0) + 1e-6
    hed = hed * alpha + beta * spread
    out = np.clip(hed2rgb(hed) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return torch.from_numpy(out).permute(2, 0, 1).contiguous()


class HEDJitter(torch.nn.Module):
    """``hed_jitter`` with probability ``p`` on images only (boxes and labels pass through)."""

    def __init__(self, sigma: float = 0.05, p: float = 0.8) -> None:
        super().__init__()
        self.sigma, self.p = sigma, p

    def forward(self, image, target):
        from torchvision import tv_tensors

        if float(torch.rand(())) < self.p:
            image = tv_tensors.Image(hed_jitter(image.as_subclass(torch.Tensor), self.sigma))
        return image, target


def lab_transforms(hed_sigma: float = 0.05, scale: tuple[float, float] = (0.5, 1.6)):
    """The cross-lab recipe: flips, HED stain jitter, HSV/contrast jitter, wide scale, blur (uint8 in and out)."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomHorizontalFlip(0.5),
        v2.RandomVerticalFlip(0.5),
        _Pair(HEDJitter(hed_sigma, p=0.8)),
        v2.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.3, hue=0.04),
        v2.RandomApply([v2.RandomAffine(degrees=0.0, translate=(0.1, 0.1), scale=scale)], p=0.7),
        v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.3),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=2.0),
    ])


class _Pair(torch.nn.Module):
    """Lets a ``(image, target) -> (image, target)`` module sit in a ``v2.Compose`` given both as one tuple."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *inputs):
        image, target = inputs if len(inputs) == 2 else inputs[0]
        return self.inner(image, target)


def add_noise(image: torch.Tensor, sigma_max: float = 0.03, p: float = 0.3) -> torch.Tensor:
    """Gaussian sensor noise (std up to ``sigma_max``) on a float 0..1 image with probability ``p``."""
    if float(torch.rand(())) >= p:
        return image
    sigma = float(torch.rand(())) * sigma_max
    return (image + torch.randn_like(image) * sigma).clamp(0.0, 1.0)
