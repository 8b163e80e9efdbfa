"""The names a command line or a widget offers (architectures, training options), without importing torch.

The real tables (``models.detectors.ARCHITECTURES``, ``models.classifiers.ARCHITECTURES``, the training recipes)
import torch and torchvision, about a second and a half of start-up; ``bloodcell info`` and ``bloodcell --help``
only need the names. A test checks that these tuples list exactly what the real tables hold, in their order.
"""

from __future__ import annotations

DETECTOR_ARCHS: tuple[str, ...] = (
    "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_resnet101_fpn", "fasterrcnn_mobilenet_v3_large_fpn",
    "retinanet_resnet50_fpn_v2", "fcos_resnet50_fpn", "ssd300_vgg16", "ssdlite320_mobilenet_v3_large", "yolov3",
    "yolov3_tiny",
)
"""The keys of :data:`.models.detectors.ARCHITECTURES`."""

CLASSIFIER_ARCHS: tuple[str, ...] = (
    "resnet18", "resnet50", "resnet101", "resnet152", "inception_v3", "googlenet", "vgg16", "densenet121",
    "darknet_tiny",
)
"""The keys of :data:`.models.classifiers.ARCHITECTURES`."""

CLASSIFIER_MODES: tuple[str, ...] = ("all", "last", "discriminative")
"""``training.classification.MODES``: which layers a classifier trains."""

CLASSIFIER_OPTIMIZERS: tuple[str, ...] = ("rmsprop", "adam", "sgd")
"""``training.classification.OPTIMIZERS``."""

CLASSIFIER_BALANCE: tuple[str, ...] = ("weights", "sampler", "none")
"""``training.classification.BALANCE``: how rare classes are weighed."""
