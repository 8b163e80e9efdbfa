"""Detection on fields of any size: batching, tiling with overlap, merging across tiles, progress and cancel.

A :class:`Predictor` turns a batch of RGB tiles into boxes; the classical detector and every trained checkpoint
are predictors. :func:`detect_array` cuts a field larger than the model's native size into overlapping tiles,
keeps from each tile only the boxes whose centre lies in the tile's own share of the field (tiles split their
overlaps at the middle), and finishes with class-aware NMS, so a cell on a tile border is reported once, whole,
provided the overlap is wider than the largest cell. It is a generator: it yields ``(done, total)`` after each
batch of tiles, and closing it (napari's Cancel) stops it there.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import BloodcellInputError
from ..io.records import AnnotationSet, ImageRecord

Detections = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Boxes (N, 4) xyxy float, labels (N,) int64 indexing the predictor's classes, scores (N,) float."""


class Predictor(Protocol):
    classes: list[str]
    model_id: str
    native_size: int | None
    """Side length the model works best at; larger fields are tiled. None: never tile by default."""
    batch_size: int

    def predict(self, tiles: list[np.ndarray], score: float, nms_iou: float) -> list[Detections]: ...


def as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 RGB from greyscale, RGBA or 16-bit input; a clear error for anything else."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise BloodcellInputError(f"detection needs a 2D greyscale or RGB(A) image; got an array of shape {img.shape}")
    img = img[..., :3]
    if img.dtype != np.uint8:
        f = img.astype(np.float64)
        top = 255.0 if f.max() <= 255 else (65535.0 if f.max() <= 65535 else f.max())
        img = np.clip(f / top * 255.0, 0, 255).astype(np.uint8)
    return img


@dataclasses.dataclass
class ClassicalPredictor:
    """The weight-free detector of :mod:`..models.classical` behind the predictor interface."""

    classes: list[str] = dataclasses.field(default_factory=lambda: ["WBC", "RBC", "Platelets"])
    model_id: str = "classical"
    native_size: int | None = 1536
    batch_size: int = 1

    def predict(self, tiles: list[np.ndarray], score: float, nms_iou: float) -> list[Detections]:
        from ..models.classical import detect_classical

        out = []
        for tile in tiles:
            b, lab, s = detect_classical(tile)
            keep = s >= score
            out.append(nms(b[keep], lab[keep], s[keep], nms_iou))
        return out


class TorchPredictor:
    """A trained :class:`~..models.detectors.Detector` on a device, AMP on CUDA, under ``inference_mode``."""

    def __init__(self, model, model_id: str, device: Any, native_size: int | None = None, batch_size: int = 4):
        self.model, self.model_id, self.device = model, model_id, device
        self.classes = list(model.classes)
        self.native_size, self.batch_size = native_size, batch_size

    def predict(self, tiles: list[np.ndarray], score: float, nms_iou: float) -> list[Detections]:
        import torch

        self.model.set_thresholds(score=score, nms_iou=nms_iou)
        tensors = [torch.from_numpy(np.array(t, copy=True)).permute(2, 0, 1).to(self.device).float() / 255.0
                   for t in tiles]
        with torch.inference_mode(), torch.autocast("cuda", enabled=self.device.type == "cuda"):
            outs = self.model(tensors)
        return [(o["boxes"].float().cpu().numpy().astype(np.float64), o["labels"].cpu().numpy().astype(np.int64),
                 o["scores"].float().cpu().numpy().astype(np.float64)) for o in outs]


def nms(boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray, iou: float) -> Detections:
    """Class-aware non-maximum suppression (torchvision's ``batched_nms``), sorted by score."""
    import torch
    from torchvision.ops import batched_nms

    if not len(boxes):
        return boxes.reshape(0, 4), labels.astype(np.int64), scores
    keep = batched_nms(torch.as_tensor(boxes, dtype=torch.float32), torch.as_tensor(scores, dtype=torch.float32),
                       torch.as_tensor(labels), iou).numpy()
    return boxes[keep], labels[keep], scores[keep]


def load_predictor(model: str | Path, device: str | None = "auto", batch_size: int = 4) -> Predictor:
    """``classical``, or a detector checkpoint file; an architecture name alone is refused (random weights)."""
    from ..models.detectors import ARCHITECTURES, as_device

    if str(model) == "classical":
        return ClassicalPredictor()
    if str(model) in ARCHITECTURES:
        raise BloodcellInputError(
            f"{model} is an architecture with no trained weights; detect with a checkpoint trained by "
            "'bloodcell train detector' (--model PATH.pt) or with --model classical"
        )
    path = Path(model)
    if not path.exists():
        raise BloodcellInputError(
            f"model {str(model)!r} is neither 'classical' nor an existing checkpoint file", path
        )
    from ..models.checkpoints import detector_from_checkpoint, model_id

    dev = as_device(device)
    net, ckpt = detector_from_checkpoint(path, dev)
    return TorchPredictor(net, model_id(path, ckpt), dev, native_size=ckpt.get("image_size"), batch_size=batch_size)


def tile_grid(length: int, tile: int, overlap: int) -> list[tuple[int, int, float, float]]:
    """Tiles along one axis as ``(start, stop, own_start, own_stop)``; the owned parts partition ``0..length``."""
    if tile >= length:
        return [(0, length, 0.0, float(length))]
    step = max(1, tile - overlap)
    starts = list(range(0, length - tile, step)) + [length - tile]
    tiles = [(s, s + tile) for s in starts]
    out = []
    for i, (s, e) in enumerate(tiles):
        own_s = 0.0 if i == 0 else (tiles[i - 1][1] + s) / 2.0
        own_e = float(length) if i == len(tiles) - 1 else (e + tiles[i + 1][0]) / 2.0
        out.append((s, e, own_s, own_e))
    return out


def detect_array(
    predictor: Predictor,
    image: np.ndarray,
    score: float = 0.3,
    nms_iou: float = 0.5,
    tile: int | None = None,
    overlap: int | None = None,
) -> Generator[tuple[int, int], None, Detections]:
    """Detect on one field; ``tile=None`` tiles only fields over 1.5× the model's native size, ``tile=0`` never."""
    if not 0.0 <= score <= 1.0 or not 0.0 < nms_iou <= 1.0:
        raise BloodcellInputError(f"score must be in 0..1 and NMS IoU in (0, 1]; got {score} and {nms_iou}")
    rgb = as_rgb(image)
    h, w = rgb.shape[:2]
    if tile is None:
        native = predictor.native_size
        tile = native if native and max(h, w) > 1.5 * native else 0
    if tile and tile < 32:
        raise BloodcellInputError(f"tile size must be at least 32 pixels (or 0 for no tiling); got {tile}")
    if not tile:
        windows = [((0, h, 0.0, float(h)), (0, w, 0.0, float(w)))]
    else:
        ov = tile // 4 if overlap is None else overlap
        if not 0 <= ov < tile:
            raise BloodcellInputError(f"overlap must be in 0..tile-1 pixels; got {ov} for tile {tile}")
        windows = [(ys, xs) for ys in tile_grid(h, tile, ov) for xs in tile_grid(w, tile, ov)]
    parts_b, parts_l, parts_s = [], [], []
    total = len(windows)
    for first in range(0, total, max(1, predictor.batch_size)):
        batch = windows[first: first + predictor.batch_size]
        crops = [rgb[ys[0]:ys[1], xs[0]:xs[1]] for ys, xs in batch]
        for (ys, xs), (b, lab, s) in zip(batch, predictor.predict(crops, score, nms_iou)):
            if len(b):
                b = b + np.array([xs[0], ys[0], xs[0], ys[0]], dtype=np.float64)
                cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
                own = (cx >= xs[2]) & (cx < xs[3]) & (cy >= ys[2]) & (cy < ys[3])
                parts_b.append(b[own])
                parts_l.append(lab[own])
                parts_s.append(s[own])
        yield min(first + len(batch), total), total
    if not parts_b:
        return np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros(0)
    b, lab, s = np.concatenate(parts_b), np.concatenate(parts_l), np.concatenate(parts_s)
    keep = s >= score
    b, lab, s = nms(b[keep], lab[keep], s[keep], nms_iou) if len(windows) > 1 else (b[keep], lab[keep], s[keep])
    b[:, 0::2] = b[:, 0::2].clip(0, w)
    b[:, 1::2] = b[:, 1::2].clip(0, h)
    order = np.argsort(-s, kind="stable")
    return b[order], lab[order], s[order]


def detections_record(name: str, width: int, height: int, dets: Detections, model_id: str,
                      path: Path | None = None) -> ImageRecord:
    """An image record of model output: scores, ``source`` = the model's id, review state ``unreviewed``."""
    b, lab, s = dets
    return ImageRecord(name, width, height, b, lab, scores=s, sources=[model_id] * len(b),
                       reviews=["unreviewed"] * len(b), path=path)


def detect_files(
    predictor: Predictor,
    paths: Sequence[str | Path],
    score: float = 0.3,
    nms_iou: float = 0.5,
    tile: int | None = None,
    overlap: int | None = None,
) -> Generator[tuple[int, int], None, AnnotationSet]:
    """Detect on image files; yields ``(images done, images)`` and returns predictions with per-image timing."""
    from ..io.images import read_image
    from ..progress import drain

    records, times = [], []
    for i, path in enumerate(paths):
        path = Path(path)
        image = read_image(path)
        t0 = time.perf_counter()
        dets = drain(detect_array(predictor, image, score, nms_iou, tile, overlap))
        times.append((time.perf_counter() - t0) * 1000.0)
        records.append(detections_record(path.name, image.shape[1], image.shape[0], dets, predictor.model_id, path))
        yield i + 1, len(paths)
    aset = AnnotationSet(list(predictor.classes), records, format="coco")
    aset.extra["info"] = {
        "description": f"predictions of {predictor.model_id}",
        "model": predictor.model_id,
        "score_threshold": score,
        "nms_iou": nms_iou,
        "ms_per_image": float(np.mean(times)) if times else None,
    }
    return aset


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named directly or found (sorted, non-recursive, then in ``JPEGImages``/``images``) in folders."""
    from ..io.images import IMAGE_SUFFIXES

    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            for sub in ("JPEGImages", "images"):
                if not found and (p / sub).is_dir():
                    found = sorted(f for f in (p / sub).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise BloodcellInputError("folder holds no images (JPEG, PNG, TIFF, BMP)", p)
            out.extend(found)
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise BloodcellInputError(
                    f"not an image file (suffix {p.suffix!r}; allowed {', '.join(sorted(IMAGE_SUFFIXES))})", p
                )
            out.append(p)
        else:
            raise BloodcellInputError("no such file or folder", p)
    return out


def detect_job(
    model: str | Path,
    image: np.ndarray,
    score: float = 0.3,
    nms_iou: float = 0.5,
    device: str | None = "auto",
    tile: int | None = None,
    overlap: int | None = None,
) -> Generator[Any, None, tuple[list[str], str, Detections]]:
    """The widget's job: load the model (yields a message), detect with per-tile progress; returns
    ``(classes, model_id, detections)``. Loading happens here, in the worker thread, so the viewer never waits."""
    yield f"loading {model}"
    predictor = load_predictor(model, device)
    if str(model) != "classical":
        from ..models.recent import remember

        remember(model)
    dets = yield from detect_array(predictor, image, score, nms_iou, tile, overlap)
    return list(predictor.classes), predictor.model_id, dets
