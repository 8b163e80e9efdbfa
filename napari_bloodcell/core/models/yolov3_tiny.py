"""YOLOv3-tiny (the small YOLOv3 of darknet, evaluated by paper 004 beside YOLOv3): the model the plugin ships.

Seven 3×3 conv + max-pool stages (16 → 1024 channels) instead of Darknet-53, and two heads at strides 16 and 32
with three anchors each; everything else (box decoding, the darknet loss, resizing, post-processing, multi-scale
training) is :class:`~.yolov3.YOLOv3`'s. About 8.7 M parameters: 17 MB in fp16, a tenth of YOLOv3's compute.

The default anchors are not COCO's: they are k-means (IoU distance, as darknet chooses them) of the cell boxes of
the public training sets (BCCD, TXL-PBC's three labs) scaled to a 416 input, so red cells, white cells and
platelets each have a prior near their size (``benchmarks/starter_detector.py anchors`` recomputes them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .yolov3 import YOLOv3, dbl

CELL_ANCHORS_416 = ((25, 32), (39, 38), (98, 46), (67, 87), (98, 101), (172, 179))
"""Width, height at a 416 input: k-means of 516 boxes per class (`starter_detector.py anchors`, mean IoU 0.76)."""


class TinyBackbone(nn.Module):
    """Darknet's tiny backbone: returns the stride-16 (256 ch) and stride-32 (1024 ch) maps."""

    def __init__(self) -> None:
        super().__init__()
        chans = (16, 32, 64, 128, 256)
        layers, c = [], 3
        for i, out in enumerate(chans):
            layers.append(dbl(c, out, 3))
            if i < len(chans) - 1:
                layers.append(nn.MaxPool2d(2, 2))
            c = out
        self.to16 = nn.Sequential(*layers)  # stride 16 after four pools
        self.to32 = nn.Sequential(nn.MaxPool2d(2, 2), dbl(256, 512, 3), nn.ZeroPad2d((0, 1, 0, 1)),
                                  nn.MaxPool2d(2, 1), dbl(512, 1024, 3))
        self.out_channels = (256, 1024)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        c4 = self.to16(x)
        return c4, self.to32(c4)


class YOLOv3Tiny(YOLOv3):
    STRIDES = (16, 32)
    ANCHORS_416 = CELL_ANCHORS_416

    def _build_layers(self, n_out: int) -> None:
        self.backbone = TinyBackbone()
        self.neck32 = dbl(1024, 256, 1)
        self.head32 = nn.Sequential(dbl(256, 512, 3), nn.Conv2d(512, n_out, 1))
        self.lat16 = dbl(256, 128, 1)
        self.head16 = nn.Sequential(dbl(128 + 256, 256, 3), nn.Conv2d(256, n_out, 1))

    def heads(self) -> tuple[nn.Sequential, ...]:
        return (self.head16, self.head32)

    def features(self, x: Tensor) -> list[Tensor]:
        c4, c5 = self.backbone(x)
        p5 = self.neck32(c5)
        p4 = torch.cat([F.interpolate(self.lat16(p5), scale_factor=2.0, mode="nearest"), c4], 1)
        return [p4, p5]
