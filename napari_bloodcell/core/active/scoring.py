"""Scoring one field (with a detector) or its cells (with a classifier) for active learning.

A field is run twice: as it is and mirrored left-right. A model that has learnt the cells answers the same both
times; where it has not, boxes appear, vanish or change class between the two (``disagreement``). The scores of
the boxes it finds, down to a low floor, say how sure it is of each (``entropy``). The embedding is the
network's own description of the field: its backbone's deepest feature map averaged over the image (and over the
tiles of a large field), so fields the model sees alike sit close together. A model without a backbone (the
classical detector) gets a colour-and-texture descriptor instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Generator, Iterator
from typing import Any

import numpy as np

from ..progress import drain
from .acquisition import (
    binary_entropy,
    box_disagreement,
    class_entropy,
    probability_disagreement,
)

SCORE_FLOOR = 0.05
"""Boxes down to this confidence count for the entropy: the cells the model nearly missed matter most."""


@dataclasses.dataclass
class FieldScore:
    uncertainty: float
    """The mean of ``entropy`` and ``disagreement``: 0..1."""
    entropy: float
    """Mean binary entropy of the boxes' confidences (boxes at or above the score floor)."""
    disagreement: float
    """1 - matched share of the boxes (at the review threshold) between the field and its mirror image."""
    cells: int
    """Boxes at or above the review threshold."""
    embedding: np.ndarray


@dataclasses.dataclass
class CellScores:
    uncertainty: np.ndarray
    """Per cell, the mean of ``entropy`` and ``disagreement``: 0..1."""
    entropy: np.ndarray
    """Class entropy over the class count's maximum."""
    disagreement: np.ndarray
    """Total variation between the crop's class probabilities and its mirror image's."""
    probabilities: np.ndarray
    embeddings: np.ndarray
    classes: list[str]


def _pooled(out: Any) -> np.ndarray | None:
    """The deepest feature map of a backbone's output (tensor, tuple or ordered dict), averaged over space."""
    import torch

    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        maps = [o for o in out if isinstance(o, torch.Tensor) and o.ndim == 4]
        if not maps:
            return None
        out = min(maps, key=lambda t: t.shape[-1] * t.shape[-2])  # the coarsest map is the deepest
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        return None
    return out.detach().float().mean((2, 3)).cpu().numpy()


@contextlib.contextmanager
def backbone_features(predictor: Any) -> Iterator[list[np.ndarray]]:
    """Collect the pooled backbone features of every batch the predictor runs while inside the block; yields an
    empty list (and collects nothing) for a predictor without a torch backbone."""
    collected: list[np.ndarray] = []
    net = getattr(getattr(predictor, "model", None), "net", None)
    backbone = getattr(net, "backbone", None)
    if backbone is None:
        yield collected
        return

    def hook(_module: Any, _inputs: Any, out: Any) -> None:
        pooled = _pooled(out)
        if pooled is not None:
            collected.append(pooled)

    handle = backbone.register_forward_hook(hook)
    try:
        yield collected
    finally:
        handle.remove()


def image_descriptor(rgb: np.ndarray) -> np.ndarray:
    """A model-free description of a field: per-channel mean, spread and a 4-bin histogram, and the grey
    gradient's magnitude, on a thumbnail (48 numbers). Used when the model has no backbone to ask."""
    from ..io.rgb import as_rgb

    rgb = as_rgb(rgb)
    step = max(1, max(rgb.shape[:2]) // 256)
    small = np.asarray(rgb[::step, ::step, :3], dtype=np.float64) / 255.0
    parts = []
    for c in range(3):
        ch = small[..., c]
        parts += [ch.mean(), ch.std()]
        parts += list(np.histogram(ch, bins=4, range=(0, 1))[0] / ch.size)
    grey = small.mean(-1)
    if min(grey.shape) < 2:  # a gradient needs two pixels each way
        grey = np.pad(grey, ((0, max(0, 2 - grey.shape[0])), (0, max(0, 2 - grey.shape[1]))), mode="edge")
    gy, gx = np.gradient(grey)
    mag = np.hypot(gx, gy)
    parts += [mag.mean(), mag.std()] + list(np.histogram(mag, bins=8, range=(0, 0.25))[0] / mag.size)
    return np.asarray(parts + [0.0] * (48 - len(parts)), dtype=np.float64)


def _mirror_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] = width - b[:, [2, 0]]
    return b


def score_field(predictor: Any, image: np.ndarray, score: float = 0.3, floor: float = SCORE_FLOOR,
                tile: int | None = None) -> FieldScore:
    """Detect on the field and on its mirror image and measure how sure and how consistent the detector is."""
    from ..inference.detect import detect_array
    from ..io.rgb import as_rgb

    rgb = as_rgb(image)
    floor = min(floor, score)
    with backbone_features(predictor) as feats:
        boxes, labels, scores = drain(detect_array(predictor, rgb, score=floor, tile=tile))
    mb, ml, ms = drain(detect_array(predictor, np.ascontiguousarray(rgb[:, ::-1]), score=floor, tile=tile))
    mb = _mirror_boxes(mb, rgb.shape[1])
    sure, sure_m = scores >= score, ms >= score
    entropy = float(binary_entropy(scores).mean()) if len(scores) else 0.0
    disagreement = box_disagreement(boxes[sure], labels[sure], mb[sure_m], ml[sure_m])
    embedding = np.concatenate(feats).mean(0) if feats else image_descriptor(rgb)
    return FieldScore((entropy + disagreement) / 2, entropy, disagreement, int(sure.sum()), embedding)


def embedding_layer(model: Any) -> str:
    """The classifier layer whose output describes a cell: the pooled features before the head."""
    from ..models.classifiers import get_architecture

    layers = get_architecture(model.arch).feature_layers
    return "pool" if "pool" in layers else "fc7" if "fc7" in layers else next(iter(layers))


def score_cells(pred: Any, crops: list[np.ndarray]) -> Generator[tuple[int, int], None, CellScores]:
    """Class probabilities of each crop and of its mirror image, and each crop's embedding; yields ``(done,
    total)`` per batch."""
    import torch

    from ..datasets.classification import eval_transforms, to_tensor
    from ..inference.classify import predict_batch, to_probabilities
    from ..models.classifiers import get_architecture

    resize = eval_transforms(pred.model.input_size)
    layer = pred.model.net.get_submodule(get_architecture(pred.model.arch).feature_layers[embedding_layer(pred.model)])
    probs, mirrored, feats = [], [], []
    pred.model.eval()
    for start in range(0, len(crops), pred.batch_size):
        batch = torch.stack([resize(to_tensor(c)) for c in crops[start:start + pred.batch_size]])
        captured: list = []
        handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:  # the embedding comes from the same pass as the prediction
            probs.append(to_probabilities(predict_batch(pred, batch), pred.head))
        finally:
            handle.remove()
        feats.append(captured[-1].detach().flatten(1).float().cpu().numpy())
        mirrored.append(to_probabilities(predict_batch(pred, torch.flip(batch, dims=[3])), pred.head))
        yield min(start + pred.batch_size, len(crops)), len(crops)
    n = len(pred.classes)
    p = np.concatenate(probs) if probs else np.zeros((0, n))
    q = np.concatenate(mirrored) if mirrored else np.zeros((0, n))
    emb = np.concatenate(feats) if feats else np.zeros((0, 1))
    if pred.multilabel:  # each label is its own yes/no question
        ent = binary_entropy(p).mean(1) if len(p) else np.zeros(0)
        dis = np.abs(p - q).mean(1) if len(p) else np.zeros(0)
    else:
        ent, dis = class_entropy(p), probability_disagreement(p, q)
    return CellScores((ent + dis) / 2, ent, dis, p, emb, list(pred.classes))
