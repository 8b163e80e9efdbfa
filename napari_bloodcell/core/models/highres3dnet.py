"""HighRes3DNet (Li et al. 2017), as the thesis (seed 002, chapter 6) trains it through NiftyNet.

A 3×3×3 convolution (``conv_0``, 16 features), three stages of three residual blocks whose 3×3×3 convolutions are
dilated by 1, 2 and 4 (``res_1`` 16, ``res_2`` 32, ``res_3`` 64 features), a 1×1×1 convolution (``conv_1``, 80
features) and the 1×1×1 classifier (``conv_2``). Every residual block is pre-activated (batch norm → ReLU →
convolution, twice) and adds its input back; when a stage widens the features the shortcut is padded with zero
channels, as NiftyNet does, so the shortcut has no weights. Nothing downsamples: the output has the input's size,
which is why the network is run on patches.

The stages are attributes with the thesis's names, so transfer learning freezes them by name
(:func:`freeze_stages`) and replaces only ``conv_2`` for a new label set (:func:`replace_classifier`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BloodcellInputError

STAGES = ("conv_0", "res_1", "res_2", "res_3", "conv_1", "conv_2")
FREEZABLE = ("conv_0", "res_1", "res_2", "res_3")
ACTIVATIONS = ("relu", "prelu")

#: Learnable parameters per stage in the thesis's table 6.1 (two input channels, two classes, NiftyNet).
THESIS_TABLE_6_1 = {"conv_0": 964, "res_1": 42060, "res_2": 153132, "res_3": 610380, "conv_1": 5602, "conv_2": 174}


def _activation(kind: str, channels: int) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "prelu":
        return nn.PReLU(channels)
    raise BloodcellInputError(f"unknown activation {kind!r}; allowed: {', '.join(ACTIVATIONS)}")


class ConvBlock(nn.Sequential):
    """Convolution → batch norm → activation (NiftyNet's ``ConvolutionalLayer``: ``conv_0`` and ``conv_1``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, activation: str) -> None:
        super().__init__(nn.Conv3d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False), nn.BatchNorm3d(out_ch),
                         _activation(activation, out_ch))


class HighResBlock(nn.Module):
    """Two pre-activated dilated 3×3×3 convolutions plus the (zero-padded) input."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int, activation: str) -> None:
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        self.body = nn.Sequential(
            nn.BatchNorm3d(in_ch), _activation(activation, in_ch),
            nn.Conv3d(in_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm3d(out_ch), _activation(activation, out_ch),
            nn.Conv3d(out_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.in_ch == self.out_ch else F.pad(x, (0, 0, 0, 0, 0, 0, 0, self.out_ch - self.in_ch))
        return self.body(x) + shortcut


class HighRes3DNet(nn.Module):
    def __init__(self, in_channels: int = 1, n_classes: int = 2, activation: str = "relu",
                 features: tuple[int, int, int] = (16, 32, 64), head_features: int = 80,
                 dilations: tuple[int, int, int] = (1, 2, 4), blocks_per_stage: int = 3) -> None:
        super().__init__()
        if in_channels < 1 or n_classes < 2:
            raise BloodcellInputError(f"HighRes3DNet needs at least 1 input channel and 2 classes; got "
                                      f"{in_channels} channel(s) and {n_classes} class(es)")
        self.in_channels, self.n_classes = in_channels, n_classes
        self.conv_0 = ConvBlock(in_channels, features[0], 3, activation)
        previous = features[0]
        for k, (width, dilation) in enumerate(zip(features, dilations), start=1):
            blocks = []
            for _ in range(blocks_per_stage):
                blocks.append(HighResBlock(previous, width, dilation, activation))
                previous = width
            setattr(self, f"res_{k}", nn.Sequential(*blocks))
        self.conv_1 = ConvBlock(previous, head_features, 1, activation)
        self.conv_2 = nn.Conv3d(head_features, n_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, D, H, W) normalised intensities → (N, classes, D, H, W) logits."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise BloodcellInputError(f"HighRes3DNet expects (N, {self.in_channels}, D, H, W); got {tuple(x.shape)}")
        for name in STAGES:
            x = getattr(self, name)(x)
        return x


def stage_parameters(model: HighRes3DNet) -> dict[str, int]:
    """Learnable parameters per named stage (the layout of the thesis's table 6.1)."""
    return {name: sum(p.numel() for p in getattr(model, name).parameters()) for name in STAGES}


def conv_kernel_parameters(model: HighRes3DNet) -> dict[str, int]:
    """Convolution weights only, per stage: the part of the count that does not depend on the framework's
    bookkeeping of normalisation and activation variables."""
    return {name: sum(m.weight.numel() for m in getattr(model, name).modules() if isinstance(m, nn.Conv3d))
            for name in STAGES}


def check_stage_names(names: Iterable[str]) -> list[str]:
    names = [n.strip() for n in names if n.strip()]
    bad = [n for n in names if n not in FREEZABLE]
    if bad:
        raise BloodcellInputError(f"cannot freeze {bad}; freezable stages: {', '.join(FREEZABLE)}")
    return names


def freeze_stages(model: HighRes3DNet, names: Iterable[str]) -> list[str]:
    """Stop the named stages learning: no gradients, and their batch norms keep their running statistics.

    Call :func:`keep_frozen_in_eval` after every ``model.train()`` (``train()`` recurses into all modules).
    """
    names = check_stage_names(names)
    for name in names:
        for p in getattr(model, name).parameters():
            p.requires_grad_(False)
    model.frozen_stages = names  # type: ignore[assignment]
    keep_frozen_in_eval(model)
    return names


def keep_frozen_in_eval(model: nn.Module) -> None:
    for name in getattr(model, "frozen_stages", []):
        for module in getattr(model, name).modules():
            module.training = False


def replace_classifier(model: HighRes3DNet, n_classes: int) -> None:
    """A new, randomly initialised ``conv_2`` for a different label set (the transfer step)."""
    model.conv_2 = nn.Conv3d(model.conv_2.in_channels, n_classes, 1).to(model.conv_2.weight.device)
    model.n_classes = n_classes


def receptive_field(model: HighRes3DNet) -> int:
    """Voxels along one axis that influence one output voxel: how much context a patch border lacks."""
    rf = 1
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            rf += (m.kernel_size[0] - 1) * m.dilation[0]
    return rf


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def thesis_comparison(model: HighRes3DNet) -> list[dict[str, int | str]]:
    """Per stage: ours, the thesis's, and how much of each is convolution weights."""
    ours, kernels = stage_parameters(model), conv_kernel_parameters(model)
    return [{"stage": s, "ours": ours[s], "thesis": THESIS_TABLE_6_1[s], "conv_weights": kernels[s],
             "ours_other": ours[s] - kernels[s], "thesis_other": THESIS_TABLE_6_1[s] - kernels[s]} for s in STAGES]

