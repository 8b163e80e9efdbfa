"""YOLOv3 (Redmon & Farhadi 2018) as paper 004 used it: Darknet-53 backbone, three detection scales, its loss.

torchvision has no YOLO, so it is written here and given torchvision's detection interface: ``model(images)``
takes a list of float CHW images in 0..1 of any size and returns one dict ``boxes/labels/scores`` per image in
that image's pixels; ``model(images, targets)`` in training mode returns a dict of losses. Labels are 1..C as in
torchvision (0 is never used), so the same training and inference code drives every detector.

Structure (Fig 5 of paper 004): ``DBL`` = conv + batch norm + leaky ReLU(0.1); Darknet-53 is a 3×3 DBL followed by
five stride-2 DBLs each followed by 1, 2, 8, 8 and 4 residual units; the neck is the FPN-like top-down path with
three heads at strides 32, 16 and 8, each predicting 3 anchors × (4 box + 1 objectness + C classes).

Loss (the darknet recipe): each ground-truth box is assigned to the one anchor (of nine) whose shape matches it
best, in the grid cell holding its centre; that anchor learns the centre offset (sigmoid, MSE), the log size
ratio (MSE), objectness 1 and its classes with independent logistic outputs (binary cross-entropy, as the paper
stresses). Box terms are weighted by ``2 - w·h`` (relative to the input) so small cells count. Anchors not
assigned and whose predicted box overlaps no ground truth by more than ``ignore_iou`` learn objectness 0.

Images are resized (not letterboxed, as darknet's default) to ``input_size`` (320, 416 or 608 in the paper; any
multiple of 32 works), and boxes are mapped back to each image's own pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, box_iou

COCO_ANCHORS_416 = (
    (10, 13), (16, 30), (33, 23),  # stride 8
    (30, 61), (62, 45), (59, 119),  # stride 16
    (116, 90), (156, 198), (373, 326),  # stride 32
)
"""The nine anchors (width, height in pixels at a 416 input) of the original YOLOv3; scaled with the input size."""

DARKNET53_UNITS = (1, 2, 8, 8, 4)


def dbl(c_in: int, c_out: int, k: int, stride: int = 1) -> nn.Sequential:
    """Darknet_conv2D_BN_Leaky."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, padding=(k - 1) // 2, bias=False),
        nn.BatchNorm2d(c_out),  # PyTorch's momentum 0.1: running statistics settle within short fine-tunes
        nn.LeakyReLU(0.1, inplace=True),
    )


class ResUnit(nn.Module):
    """Two DBLs (1×1 halving the channels, then 3×3) and a shortcut add."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(dbl(channels, channels // 2, 1), dbl(channels // 2, channels, 3))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class Darknet53(nn.Module):
    """The 52 convolutional layers of Darknet-53 (its classifier dropped); returns strides 8, 16 and 32."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = dbl(3, 32, 3)
        stages = []
        c = 32
        for units in DARKNET53_UNITS:
            stages.append(nn.Sequential(dbl(c, c * 2, 3, stride=2), *[ResUnit(c * 2) for _ in range(units)]))
            c *= 2
        self.stages = nn.ModuleList(stages)
        self.out_channels = (256, 512, 1024)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs[2], outs[3], outs[4]


def _five_dbl(c_in: int, c_mid: int) -> nn.Sequential:
    return nn.Sequential(
        dbl(c_in, c_mid, 1), dbl(c_mid, c_mid * 2, 3), dbl(c_mid * 2, c_mid, 1), dbl(c_mid, c_mid * 2, 3),
        dbl(c_mid * 2, c_mid, 1),
    )


class YOLOv3(nn.Module):
    """YOLOv3 for ``num_classes`` classes (labels 1..num_classes, 0 reserved as in torchvision)."""

    def __init__(
        self,
        num_classes: int,
        input_size: int = 416,
        anchors: tuple[tuple[float, float], ...] | None = None,
        score_thresh: float = 0.01,
        nms_thresh: float = 0.45,
        detections_per_img: int = 300,
        ignore_iou: float = 0.5,
    ) -> None:
        super().__init__()
        if input_size % 32:
            raise ValueError(f"YOLOv3 input size must be a multiple of 32 (320, 416, 608); got {input_size}")
        self.num_classes = num_classes  # includes the unused background slot, as torchvision counts
        self.n_cls = num_classes - 1
        self.input_size = input_size
        scale = input_size / 416.0
        base = anchors if anchors is not None else tuple((w * scale, h * scale) for w, h in self.ANCHORS_416)
        self.strides = self.STRIDES
        if len(base) != 3 * len(self.strides):
            raise ValueError(f"{type(self).__name__} needs {3 * len(self.strides)} anchors (three per scale); "
                             f"got {len(base)}")
        self.register_buffer("anchors", torch.tensor(base, dtype=torch.float32).reshape(-1, 3, 2), persistent=False)
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img, self.ignore_iou = detections_per_img, ignore_iou
        self.train_sizes: tuple[int, ...] = ()
        """Input sizes drawn per batch in training (multi-scale); empty trains at ``input_size``."""
        self._size = input_size
        self._build_layers(3 * (5 + self.n_cls))
        self._init_bias()

    STRIDES: tuple[int, ...] = (8, 16, 32)
    ANCHORS_416: tuple[tuple[float, float], ...] = COCO_ANCHORS_416

    def _build_layers(self, n_out: int) -> None:
        self.backbone = Darknet53()
        self.neck32 = _five_dbl(1024, 512)
        self.head32 = nn.Sequential(dbl(512, 1024, 3), nn.Conv2d(1024, n_out, 1))
        self.lat16 = dbl(512, 256, 1)
        self.neck16 = _five_dbl(512 + 256, 256)
        self.head16 = nn.Sequential(dbl(256, 512, 3), nn.Conv2d(512, n_out, 1))
        self.lat8 = dbl(256, 128, 1)
        self.neck8 = _five_dbl(256 + 128, 128)
        self.head8 = nn.Sequential(dbl(128, 256, 3), nn.Conv2d(256, n_out, 1))

    def heads(self) -> tuple[nn.Sequential, ...]:
        return (self.head8, self.head16, self.head32)

    def _init_bias(self) -> None:
        """Start objectness and class logits low (focal-loss style prior) so early training is stable."""
        for head in self.heads():
            conv = head[-1]
            bias = conv.bias.detach().view(3, -1)
            bias[:, 4] = math.log(0.01 / 0.99)
            bias[:, 5:] = math.log(1.0 / max(self.n_cls, 2))
            conv.bias = nn.Parameter(bias.reshape(-1))

    # ----------------------------------------------------------------------------------------------- network
    def features(self, x: Tensor) -> list[Tensor]:
        """The neck's output per scale, finest stride first (the order of ``heads``)."""
        c3, c4, c5 = self.backbone(x)
        p5 = self.neck32(c5)
        p4 = self.neck16(torch.cat([F.interpolate(self.lat16(p5), scale_factor=2.0, mode="nearest"), c4], 1))
        p3 = self.neck8(torch.cat([F.interpolate(self.lat8(p4), scale_factor=2.0, mode="nearest"), c3], 1))
        return [p3, p4, p5]

    def raw_outputs(self, x: Tensor) -> list[Tensor]:
        """Per scale (finest stride first) a tensor ``(B, 3, H, W, 5 + C)`` of raw logits."""
        outs = []
        for p, head in zip(self.features(x), self.heads()):
            o = head(p)
            b, _, h, w = o.shape
            outs.append(o.view(b, 3, 5 + self.n_cls, h, w).permute(0, 1, 3, 4, 2).contiguous())
        return outs

    def _batch(self, images: list[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        s = self.input_size
        if self.training and self.train_sizes:  # multi-scale training: one size per batch, as darknet does
            s = self.train_sizes[int(torch.randint(len(self.train_sizes), ()))]
        self._size = s
        batch = torch.stack([F.interpolate(img[None], size=(s, s), mode="bilinear", align_corners=False)[0]
                             for img in images])
        return batch, sizes

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        batch, sizes = self._batch(images)
        outs = self.raw_outputs(batch)
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            scaled = []
            for (h, w), t in zip(sizes, targets):
                factor = torch.tensor([self._size / w, self._size / h] * 2, device=batch.device)
                scaled.append({"boxes": t["boxes"] * factor, "labels": t["labels"]})
            return self.loss(outs, scaled)
        return self.postprocess(outs, sizes)

    # ------------------------------------------------------------------------------------------------ decode
    def _grid(self, h: int, w: int, device: torch.device) -> Tensor:
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        return torch.stack([xs, ys], -1).float()  # (H, W, 2)

    def decode(self, outs: list[Tensor]) -> list[Tensor]:
        """Per scale, boxes ``(B, 3, H, W, 4)`` as xyxy in input pixels."""
        boxes = []
        for scale, o in enumerate(outs):
            _, _, h, w, _ = o.shape
            stride = self.strides[scale]
            grid = self._grid(h, w, o.device)
            xy = (torch.sigmoid(o[..., :2].float()) + grid) * stride
            wh = torch.exp(o[..., 2:4].float().clamp(max=8.0)) * self.anchors[scale].view(1, 3, 1, 1, 2)
            boxes.append(torch.cat([xy - wh / 2, xy + wh / 2], -1))
        return boxes

    @torch.no_grad()
    def postprocess(self, outs: list[Tensor], sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        boxes = torch.cat([b.flatten(1, 3) for b in self.decode(outs)], 1)  # (B, N, 4)
        logits = torch.cat([o.flatten(1, 3) for o in outs], 1).float()  # (B, N, 5 + C)
        scores_all = torch.sigmoid(logits[..., 4:5]) * torch.sigmoid(logits[..., 5:])
        results = []
        for i, (h, w) in enumerate(sizes):
            scores = scores_all[i]
            idx, cls = torch.nonzero(scores > self.score_thresh, as_tuple=True)
            sc = scores[idx, cls]
            bx = boxes[i][idx]
            bx = bx * torch.tensor([w / self._size, h / self._size] * 2, device=bx.device)
            bx[:, 0::2] = bx[:, 0::2].clamp(0, w)
            bx[:, 1::2] = bx[:, 1::2].clamp(0, h)
            keep = batched_nms(bx, sc, cls, self.nms_thresh)[: self.detections_per_img]
            results.append({"boxes": bx[keep], "scores": sc[keep], "labels": cls[keep] + 1})
        return results

    # -------------------------------------------------------------------------------------------------- loss
    def loss(self, outs: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        device = outs[0].device
        all_anchors = self.anchors.view(-1, 2)
        pred_boxes = self.decode(outs)
        loss_xy = torch.zeros((), device=device)
        loss_wh = torch.zeros((), device=device)
        loss_obj = torch.zeros((), device=device)
        loss_cls = torch.zeros((), device=device)
        batch = outs[0].shape[0]
        area_in = float(self._size**2)
        for scale, o in enumerate(outs):
            o = o.float()
            _, _, h, w, _ = o.shape
            stride = self.strides[scale]
            obj_target = torch.zeros(o.shape[:4], device=device)
            noobj = torch.ones(o.shape[:4], dtype=torch.bool, device=device)
            for b, t in enumerate(targets):
                gt = t["boxes"].to(device).float()
                if not len(gt):
                    continue
                # ignore anchors whose prediction already overlaps some ground truth well
                ious = box_iou(pred_boxes[scale][b].reshape(-1, 4).detach(), gt).amax(1)
                noobj[b] &= (ious <= self.ignore_iou).view(3, h, w)
                gwh = (gt[:, 2:] - gt[:, :2]).clamp(min=1e-3)
                gxy = (gt[:, :2] + gt[:, 2:]) / 2
                inter = torch.min(gwh[:, None], all_anchors[None]).prod(-1)
                shape_iou = inter / (gwh.prod(-1)[:, None] + all_anchors.prod(-1)[None] - inter)
                best = shape_iou.argmax(1)
                mine = (best // 3) == scale
                if not mine.any():
                    continue
                a = best[mine] % 3
                cxy = gxy[mine] / stride
                gi = cxy[:, 0].long().clamp(0, w - 1)
                gj = cxy[:, 1].long().clamp(0, h - 1)
                p = o[b, a, gj, gi]  # (n, 5 + C)
                weight = 2.0 - gwh[mine].prod(-1) / area_in
                txy = cxy - torch.stack([gi, gj], -1).float()
                twh = torch.log(gwh[mine] / self.anchors[scale][a])
                loss_xy = loss_xy + (weight[:, None] * (torch.sigmoid(p[:, :2]) - txy) ** 2).sum()
                loss_wh = loss_wh + (weight[:, None] * (p[:, 2:4] - twh) ** 2).sum()
                cls_t = torch.zeros_like(p[:, 5:])
                cls_t[torch.arange(len(a), device=device), t["labels"].to(device)[mine] - 1] = 1.0
                loss_cls = loss_cls + F.binary_cross_entropy_with_logits(p[:, 5:], cls_t, reduction="sum")
                obj_target[b, a, gj, gi] = 1.0
                noobj[b, a, gj, gi] = False
            pos = obj_target > 0
            obj_logits = o[..., 4]
            loss_obj = loss_obj + F.binary_cross_entropy_with_logits(
                obj_logits[pos | noobj], obj_target[pos | noobj], reduction="sum"
            )
        return {
            "loss_xy": loss_xy / batch,
            "loss_wh": loss_wh / batch,
            "loss_objectness": loss_obj / batch,
            "loss_classifier": loss_cls / batch,
        }
