"""The cell-classifier registry: the papers' networks, each built for a class list, single- or multi-label.

``resnet50/101/152`` and ``inception_v3`` (299 px, auxiliary logits while training) are paper 000's; ``googlenet``
is its Inception v1; ``vgg16`` is paper 003's feature extractor; ``densenet121`` carries the thesis's (002) head:
adaptive average and max pooling concatenated, batch norm, linear, ReLU, batch norm, linear. Every network is
wrapped in :class:`Classifier`, which takes float RGB tensors in 0..1 (it applies the ImageNet normalisation
itself, so a crop goes in exactly as a detector's image does) and returns one logit per class or label.

Initial weights are chosen as for detectors (:mod:`.weights`): ``none``, ``imagenet``, a local file, or ``auto``.
``head_modules`` name the layers that "last layer only" trains; ``feature_layers`` name the layers whose output
feeds the SVM (paper 003 used VGG16's second 4096-unit dense layer, ``fc7``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import BloodcellInputError, nearest

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class ClassifierArch:
    name: str
    summary: str
    build: Callable[[int, Any], nn.Module]
    """``build(num_outputs, imagenet_weights_enum_or_None)``."""
    imagenet_weights: str | None
    input_size: int
    head_modules: tuple[str, ...]
    feature_layers: dict[str, str]
    """Feature name → module path (inside ``net``) whose output, flattened, is the feature vector."""
    coco_weights: str | None = None  # the weights helpers ask every spec for it; classifiers have none


def _tv():
    from torchvision import models

    return models


def _resnet(depth: int) -> Callable[[int, Any], nn.Module]:
    def build(n: int, weights) -> nn.Module:
        net = getattr(_tv(), f"resnet{depth}")(weights=weights)
        net.fc = nn.Linear(net.fc.in_features, n)
        return net

    return build


def _inception_v3(n: int, weights) -> nn.Module:
    net = _tv().inception_v3(weights=weights, aux_logits=True, transform_input=True, init_weights=weights is None)
    net.fc = nn.Linear(net.fc.in_features, n)
    net.AuxLogits.fc = nn.Linear(net.AuxLogits.fc.in_features, n)
    return net


def _googlenet(n: int, weights) -> nn.Module:
    net = _tv().googlenet(weights=weights, aux_logits=False, transform_input=True, init_weights=weights is None)
    net.fc = nn.Linear(net.fc.in_features, n)
    return net


def _vgg16(n: int, weights) -> nn.Module:
    net = _tv().vgg16(weights=weights)
    net.classifier[6] = nn.Linear(4096, n)
    return net


class ConcatPool(nn.Module):
    """Adaptive average and max pooling side by side (fastai's AdaptiveConcatPool2d, as the thesis used)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([nn.functional.adaptive_avg_pool2d(x, 1), nn.functional.adaptive_max_pool2d(x, 1)], 1)


class DenseNetConcatHead(nn.Module):
    """DenseNet121 features, then the thesis's head: concat pool, BN, dropout, linear, ReLU, BN, dropout, linear."""

    def __init__(self, n: int, weights, hidden: int = 512) -> None:
        super().__init__()
        self.features = _tv().densenet121(weights=weights).features
        width = 2 * 1024
        self.pool = nn.Sequential(nn.ReLU(inplace=False), ConcatPool(), nn.Flatten())
        self.head = nn.Sequential(nn.BatchNorm1d(width), nn.Dropout(0.25), nn.Linear(width, hidden), nn.ReLU(),
                                  nn.BatchNorm1d(hidden), nn.Dropout(0.5), nn.Linear(hidden, n))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.features(x)))


class DarknetTinyClassifier(nn.Module):
    """The shipped detector's backbone (YOLOv3-tiny's, :class:`.yolov3_tiny.TinyBackbone`) with a pooled linear
    head. Its names match the detector's (``backbone.*``), so ``--weights DETECTOR.pt`` starts it from a detector
    trained on smears (the transfer experiment of docs/benchmarks.md). The detector saw 0..1 pixels, so the
    ImageNet normalisation the :class:`Classifier` applies is undone first."""

    def __init__(self, n: int, weights) -> None:
        super().__init__()
        from .yolov3_tiny import TinyBackbone

        self.backbone = TinyBackbone()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(1024, n))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.backbone(x * self.std + self.mean)[1]))


ARCHITECTURES: dict[str, ClassifierArch] = {
    a.name: a
    for a in (
        ClassifierArch("resnet18", "ResNet-18 (small: trains on a CPU; the red-cell morphology benchmark's)",
                       _resnet(18), "ResNet18_Weights.IMAGENET1K_V1", 224, ("fc",), {"pool": "avgpool"}),
        ClassifierArch("resnet50", "ResNet-50 (paper 000's best)", _resnet(50), "ResNet50_Weights.IMAGENET1K_V1",
                       224, ("fc",), {"pool": "avgpool"}),
        ClassifierArch("resnet101", "ResNet-101 (paper 000)", _resnet(101), "ResNet101_Weights.IMAGENET1K_V1",
                       224, ("fc",), {"pool": "avgpool"}),
        ClassifierArch("resnet152", "ResNet-152 (paper 000)", _resnet(152), "ResNet152_Weights.IMAGENET1K_V1",
                       224, ("fc",), {"pool": "avgpool"}),
        ClassifierArch("inception_v3", "Inception v3, 299 px, auxiliary logits in training (paper 000)",
                       _inception_v3, "Inception_V3_Weights.IMAGENET1K_V1", 299, ("fc", "AuxLogits.fc"),
                       {"pool": "avgpool"}),
        ClassifierArch("googlenet", "GoogLeNet / Inception v1 (paper 000)", _googlenet,
                       "GoogLeNet_Weights.IMAGENET1K_V1", 224, ("fc",), {"pool": "avgpool"}),
        ClassifierArch("vgg16", "VGG16 (paper 003: fc7 features + linear SVM, or fine-tuned)", _vgg16,
                       "VGG16_Weights.IMAGENET1K_V1", 224, ("classifier.6",),
                       {"fc7": "classifier.4", "fc6": "classifier.1", "pool5": "avgpool"}),
        ClassifierArch("densenet121", "DenseNet121 with the thesis's concat-pool head (paper 002)",
                       DenseNetConcatHead, "DenseNet121_Weights.IMAGENET1K_V1", 224, ("head",), {"pool": "pool"}),
        ClassifierArch("darknet_tiny", "YOLOv3-tiny's backbone (starts from the starter detector with --weights "
                       "DETECTOR.pt)", DarknetTinyClassifier, None, 128, ("head",), {"pool": "pool"}),
    )
}


def get_architecture(name: str) -> ClassifierArch:
    if name not in ARCHITECTURES:
        raise BloodcellInputError(
            f"unknown classifier architecture {name!r}{nearest(name, list(ARCHITECTURES))}; "
            f"choose one of {', '.join(ARCHITECTURES)}"
        )
    return ARCHITECTURES[name]


class Classifier(nn.Module):
    """A network for ``classes``: 0..1 RGB batches in, one logit per class (or per label when multi-label) out.

    In training mode ``inception_v3`` returns ``(logits, aux_logits)``; everything else returns logits only.
    """

    def __init__(self, arch: str, classes: list[str], net: nn.Module, multilabel: bool = False,
                 input_size: int | None = None, initial_weights: str = "none") -> None:
        super().__init__()
        spec = get_architecture(arch)
        self.arch, self.classes, self.multilabel = arch, list(classes), bool(multilabel)
        self.input_size = int(input_size or spec.input_size)
        self.initial_weights = initial_weights
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def arch_args(self) -> dict[str, Any]:
        return {"multilabel": self.multilabel, "input_size": self.input_size}

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        out = self.net((x - self.mean) / self.std)
        if isinstance(out, tuple) and hasattr(out, "logits"):  # InceptionOutputs / GoogLeNetOutputs
            return (out.logits, out.aux_logits) if self.training and out.aux_logits is not None else out.logits
        return out

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for name in head_modules(self) for p in self.net.get_submodule(name).parameters()]

    def body_parameters(self) -> list[nn.Parameter]:
        head = {id(p) for p in self.head_parameters()}
        return [p for p in self.net.parameters() if id(p) not in head]


def head_modules(model: Classifier) -> tuple[str, ...]:
    """The modules "last layer only" trains (inception's auxiliary classifier only where it exists)."""
    return tuple(n for n in get_architecture(model.arch).head_modules
                 if n.split(".")[0] != "AuxLogits" or model.net.AuxLogits is not None)


def build_classifier(arch: str, classes: list[str], weights: str = "none", multilabel: bool = False,
                     input_size: int | None = None) -> Classifier:
    """Build ``arch`` with one output per class (or label) and the given initial weights."""
    from .weights import apply_initial_weights, backbone_weights_for

    if len(classes) < (1 if multilabel else 2):
        raise BloodcellInputError(f"a {'multi-label' if multilabel else 'single-label'} classifier needs at least "
                                  f"{1 if multilabel else 2} classes; got {classes}")
    spec = get_architecture(arch)
    smallest = 75 if arch == "inception_v3" else 32
    if input_size is not None and input_size < smallest:
        raise BloodcellInputError(f"{arch} needs an input of at least {smallest} pixels; got {input_size}")
    enum, resolved = backbone_weights_for(spec, weights)
    net = spec.build(len(classes), enum)
    if arch == "inception_v3" and input_size is not None and input_size < 299:
        net.aux_logits, net.AuxLogits = False, None  # its 5x5 pooling needs the 17x17 map of a 299 px input
    model = Classifier(arch, classes, net, multilabel, input_size)
    model.initial_weights = apply_initial_weights(model, spec, resolved)
    return model


def extract_features(model: Classifier, x: Tensor, layer: str) -> Tensor:
    """The flattened output of a named layer (``feature_layers``) for a batch, in evaluation mode."""
    spec = get_architecture(model.arch)
    if layer not in spec.feature_layers:
        raise BloodcellInputError(f"{model.arch} has no feature layer {layer!r}; it has "
                                  f"{', '.join(spec.feature_layers)}")
    captured: list[Tensor] = []
    handle = model.net.get_submodule(spec.feature_layers[layer]).register_forward_hook(
        lambda _m, _i, out: captured.append(out))
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(x)
        model.train(was_training)
    finally:
        handle.remove()
    return captured[0].flatten(1)
