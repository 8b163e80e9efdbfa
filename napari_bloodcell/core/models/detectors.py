"""The detector registry: one name per architecture, each built for a given class list.

Every detector is wrapped in :class:`Detector`, which speaks the project's box contract: labels are 0-based
indices into ``classes`` (torchvision's models reserve 0 for the background, so the wrapper shifts by one on the
way in and out). Images go in as float CHW tensors in 0..1; training mode returns a dict of losses, evaluation mode
one ``boxes/labels/scores`` dict per image.

Initial weights (``weights=``): ``none`` (random), ``imagenet`` (backbone only), ``coco`` (the whole detector where
torchvision has COCO weights; the class-specific layers are re-initialised for our classes), a local file (a
project checkpoint or a plain state dict), or ``auto`` (the best pretrained weights that are cached or can be
downloaded, else random with a warning). See :mod:`.weights`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


from torch import Tensor, nn

from ..errors import BloodcellInputError, nearest


@dataclasses.dataclass(frozen=True)
class Architecture:
    name: str
    summary: str
    build: Callable[..., nn.Module]
    """``build(num_classes, backbone_weights, **arch_args)`` with ``num_classes`` counting the background."""
    coco_weights: str | None
    """torchvision weights enum member for the whole detector (COCO), if any."""
    imagenet_weights: str | None
    """torchvision weights enum member for the backbone (ImageNet), if any."""
    defaults: dict[str, Any]
    """Architecture arguments and their defaults (recorded in every checkpoint)."""


def _tv():
    import torchvision.models.detection as det

    return det


def _frcnn_r50_v2(num_classes: int, backbone_weights, min_size: int, max_size: int) -> nn.Module:
    return _tv().fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=backbone_weights, num_classes=num_classes,
                                            min_size=min_size, max_size=max_size)


def _frcnn_r101(num_classes: int, backbone_weights, min_size: int, max_size: int) -> nn.Module:
    """Faster R-CNN with a ResNet-101 FPN backbone, as the RBC paper (001) used; torchvision has no builder."""
    from torchvision.models import resnet101
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

    trainable = 3 if backbone_weights is not None else 5
    backbone = _resnet_fpn_extractor(resnet101(weights=backbone_weights), trainable)
    return _tv().FasterRCNN(backbone, num_classes=num_classes, min_size=min_size, max_size=max_size)


def _frcnn_mobilenet(num_classes: int, backbone_weights, min_size: int, max_size: int) -> nn.Module:
    return _tv().fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=backbone_weights,
                                                   num_classes=num_classes, min_size=min_size, max_size=max_size)


def _retinanet(num_classes: int, backbone_weights, min_size: int, max_size: int) -> nn.Module:
    return _tv().retinanet_resnet50_fpn_v2(weights=None, weights_backbone=backbone_weights, num_classes=num_classes,
                                           min_size=min_size, max_size=max_size)


def _fcos(num_classes: int, backbone_weights, min_size: int, max_size: int) -> nn.Module:
    return _tv().fcos_resnet50_fpn(weights=None, weights_backbone=backbone_weights, num_classes=num_classes,
                                   min_size=min_size, max_size=max_size)


def ssd_scales(s_min: float, s_max: float, n_maps: int = 6) -> list[float]:
    """Default-box scales of the SSD paper as its Caffe code (used by paper 004) sets them.

    The first map (conv4_3) gets ``s_min / 2``, maps 2..m are spaced evenly from ``s_min`` to ``s_max``, and one
    more step beyond ``s_max`` gives the extra aspect-ratio-1 box of the last map (``sqrt(s_k s_k+1)``).
    """
    if not 0 < s_min < s_max <= 1.5:
        raise BloodcellInputError(f"SSD default-box scales need 0 < s_min < s_max <= 1.5; got {s_min}, {s_max}")
    step = (s_max - s_min) / (n_maps - 2)
    return [s_min / 2] + [s_min + i * step for i in range(n_maps - 1)] + [s_max + step]


def _ssd300(num_classes: int, backbone_weights, s_min: float, s_max: float) -> nn.Module:
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

    model = _tv().ssd300_vgg16(weights=None, weights_backbone=backbone_weights, num_classes=num_classes)
    old = model.anchor_generator
    # same aspect ratios (so the heads keep their shapes), the paper's scales
    model.anchor_generator = DefaultBoxGenerator(old.aspect_ratios, scales=ssd_scales(s_min, s_max),
                                                 steps=old.steps, clip=old.clip)
    return model


def _ssdlite(num_classes: int, backbone_weights) -> nn.Module:
    return _tv().ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=backbone_weights,
                                               num_classes=num_classes)


def _yolov3(num_classes: int, backbone_weights, input_size: int) -> nn.Module:
    from .yolov3 import YOLOv3

    if input_size not in (320, 416, 608) and input_size % 32:
        raise BloodcellInputError(f"yolov3 input_size must be a multiple of 32 (320, 416, 608); got {input_size}")
    return YOLOv3(num_classes, input_size=input_size)


def _yolov3_tiny(num_classes: int, backbone_weights, input_size: int) -> nn.Module:
    from .yolov3_tiny import YOLOv3Tiny

    if input_size % 32 or not 128 <= input_size <= 1024:
        raise BloodcellInputError(f"yolov3_tiny input_size must be a multiple of 32 in 128..1024; got {input_size}")
    return YOLOv3Tiny(num_classes, input_size=input_size)


_RCNN_SIZE = {"min_size": 480, "max_size": 1333}
ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("fasterrcnn_resnet50_fpn_v2", "Faster R-CNN, ResNet-50 FPN v2 (torchvision)", _frcnn_r50_v2,
                     "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1", "ResNet50_Weights.IMAGENET1K_V1", _RCNN_SIZE),
        Architecture("fasterrcnn_resnet101_fpn", "Faster R-CNN, ResNet-101 FPN (the RBC paper's backbone)",
                     _frcnn_r101, None, "ResNet101_Weights.IMAGENET1K_V1", _RCNN_SIZE),
        Architecture("fasterrcnn_mobilenet_v3_large_fpn", "Faster R-CNN, MobileNet v3 large FPN (fast on CPU)",
                     _frcnn_mobilenet, "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1",
                     "MobileNet_V3_Large_Weights.IMAGENET1K_V1", _RCNN_SIZE),
        Architecture("retinanet_resnet50_fpn_v2", "RetinaNet, ResNet-50 FPN v2 (focal loss)", _retinanet,
                     "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1", "ResNet50_Weights.IMAGENET1K_V1", _RCNN_SIZE),
        Architecture("fcos_resnet50_fpn", "FCOS, ResNet-50 FPN (anchor-free)", _fcos,
                     "FCOS_ResNet50_FPN_Weights.COCO_V1", "ResNet50_Weights.IMAGENET1K_V1", _RCNN_SIZE),
        Architecture("ssd300_vgg16", "SSD300, VGG16 (paper 004's best model; s_min/s_max default-box scales)",
                     _ssd300, "SSD300_VGG16_Weights.COCO_V1", "VGG16_Weights.IMAGENET1K_FEATURES",
                     {"s_min": 0.2, "s_max": 0.9}),
        Architecture("ssdlite320_mobilenet_v3_large", "SSDlite 320, MobileNet v3 large", _ssdlite,
                     "SSDLite320_MobileNet_V3_Large_Weights.COCO_V1", "MobileNet_V3_Large_Weights.IMAGENET1K_V1", {}),
        Architecture("yolov3", "YOLOv3, Darknet-53, three scales (paper 004; input 320/416/608)", _yolov3,
                     None, None, {"input_size": 416}),
        Architecture("yolov3_tiny", "YOLOv3-tiny, two scales (paper 004; the shipped starter detector)",
                     _yolov3_tiny, None, None, {"input_size": 416}),
    )
}


def get_architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise BloodcellInputError(
            f"unknown detector architecture {name!r}{nearest(name, list(ARCHITECTURES))}; "
            f"choose one of {', '.join(ARCHITECTURES)} (or 'classical')"
        )
    return ARCHITECTURES[name]


def resolve_arch_args(name: str, arch_args: dict[str, Any] | None) -> dict[str, Any]:
    arch = get_architecture(name)
    args = dict(arch.defaults)
    for key, value in (arch_args or {}).items():
        if key not in args:
            raise BloodcellInputError(
                f"{name} has no argument {key!r}; it takes {', '.join(args) or 'no arguments'}"
            )
        args[key] = type(args[key])(value)
    return args


class Detector(nn.Module):
    """A detector for ``classes`` that takes and returns 0-based labels (the project's box contract)."""

    def __init__(self, arch: str, classes: list[str], net: nn.Module, arch_args: dict[str, Any],
                 initial_weights: str = "none") -> None:
        super().__init__()
        self.arch, self.classes, self.arch_args = arch, list(classes), dict(arch_args)
        self.initial_weights = initial_weights
        self.net = net

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        if targets is not None:
            targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]
        out = self.net(images, targets)
        if isinstance(out, dict):  # losses
            return out
        return [{"boxes": o["boxes"], "scores": o["scores"], "labels": o["labels"] - 1} for o in out]

    def set_thresholds(self, score: float, nms_iou: float, max_detections: int = 1000) -> None:
        """Let the network keep low-score boxes and many boxes; the inference code applies the user's threshold."""
        net = self.net
        if hasattr(net, "roi_heads"):  # Faster R-CNN
            net.roi_heads.score_thresh, net.roi_heads.nms_thresh = score, nms_iou
            net.roi_heads.detections_per_img = max_detections
            net.rpn._post_nms_top_n["testing"] = max(net.rpn._post_nms_top_n["testing"], max_detections)
        else:  # RetinaNet, FCOS, SSD, YOLOv3
            net.score_thresh, net.nms_thresh, net.detections_per_img = score, nms_iou, max_detections
            if hasattr(net, "topk_candidates"):
                net.topk_candidates = max(net.topk_candidates, max_detections)


def build_detector(
    arch: str,
    classes: list[str],
    weights: str = "none",
    arch_args: dict[str, Any] | None = None,
) -> Detector:
    """Build ``arch`` for ``classes`` with the given initial weights (see module docstring)."""
    from .weights import apply_initial_weights, backbone_weights_for

    if not classes:
        raise BloodcellInputError("a detector needs at least one class")
    spec = get_architecture(arch)
    args = resolve_arch_args(arch, arch_args)
    backbone, weights = backbone_weights_for(spec, weights)
    net = spec.build(len(classes) + 1, backbone, **args)
    detector = Detector(arch, classes, net, args)
    detector.initial_weights = apply_initial_weights(detector, spec, weights)
    return detector


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
