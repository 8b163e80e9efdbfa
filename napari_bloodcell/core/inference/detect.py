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
import math
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..progress import note, step
from ..errors import BloodcellInputError
from ..io.records import AnnotationSet, ImageRecord
from ..io.rgb import as_rgb, display_range, finite_min_max

Detections = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Boxes (N, 4) xyxy float, labels (N,) int64 indexing the predictor's classes, scores (N,) float."""


class Predictor(Protocol):
    classes: list[str]
    model_id: str
    native_size: int | None
    """Side length the model works best at; larger fields are tiled. None: never tile by default."""
    batch_size: int

    def predict(self, tiles: list[np.ndarray], score: float, nms_iou: float) -> list[Detections]: ...


@dataclasses.dataclass
class ClassicalPredictor:
    """The weight-free detector of :mod:`..models.classical` behind the predictor interface."""

    classes: list[str] = dataclasses.field(default_factory=lambda: ["WBC", "RBC", "Platelets"])
    model_id: str = "classical"
    native_size: int | None = 1536
    batch_size: int = 1
    label: str = "the classical detector"

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
        self.label = model_id

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
    """``classical``, ``auto`` (the registry's active detector, else the bundled one, else classical), ``bundled``,
    or a detector checkpoint file; an architecture name alone is refused (random weights). The predictor's
    ``label`` says in words which model it is."""
    from ..device import as_device
    from ..models.bundled import resolve
    from ..models.detectors import ARCHITECTURES

    model, label = resolve(model, "detector")
    if str(model) == "classical":
        return ClassicalPredictor(label=label if label != "classical" else "the classical detector")
    if str(model) in ARCHITECTURES:
        raise BloodcellInputError(
            f"{model} is an architecture with no trained weights; detect with a checkpoint trained by "
            "'bloodcell train detector' (--model PATH.pt) or with --model classical"
        )
    path = Path(model)
    if not path.exists():
        raise BloodcellInputError(
            f"model {str(model)!r} is neither 'auto', 'bundled', 'classical' nor an existing checkpoint file", path
        )
    from ..models.checkpoints import detector_from_checkpoint, model_id

    dev = as_device(device)
    net, ckpt = detector_from_checkpoint(path, dev)
    predictor = TorchPredictor(net, model_id(path, ckpt), dev, native_size=ckpt.get("image_size"),
                               batch_size=batch_size)
    predictor.label = label if label != str(model) else f"{ckpt['arch']} {path.name}"
    return predictor


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
    image: Any,
    score: float = 0.3,
    nms_iou: float = 0.5,
    tile: int | None = None,
    overlap: int | None = None,
) -> Generator[tuple[int, int], None, Detections]:
    """Detect on one field; ``tile=None`` tiles only fields over 1.5× the model's native size, ``tile=0`` never.

    ``image`` is an array, or a field too large to hold whole: a :class:`~..io.lazy_images.LazyImage` or a dask
    array (a lazy napari layer). Those are read a band of tiles at a time (:class:`_Bands`), so memory stays
    bounded by the tile size times the band width, and give the same boxes as the whole array would."""
    if not 0.0 <= score <= 1.0 or not 0.0 < nms_iou <= 1.0:
        raise BloodcellInputError(f"score must be in 0..1 and NMS IoU in (0, 1]; got {score} and {nms_iou}")
    lazy = is_lazy_field(image)
    if lazy:
        shape = tuple(image.shape)
        if len(shape) != 2 and (len(shape) != 3 or shape[-1] not in (3, 4)):
            raise BloodcellInputError(f"detection needs a 2D greyscale or RGB(A) image; got shape {shape}")
        h, w = int(shape[0]), int(shape[1])
    else:
        rgb = as_rgb(image)
        h, w = rgb.shape[:2]
    if tile is None:
        native = predictor.native_size or (LAZY_TILE if lazy else None)
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
    bands = _Bands(image, windows) if lazy else None
    parts_b, parts_l, parts_s = [], [], []
    total = len(windows)
    for first in range(0, total, max(1, predictor.batch_size)):
        batch = windows[first: first + predictor.batch_size]
        if bands is not None:
            crops = [bands.crop(ys, xs) for ys, xs in batch]
        else:
            crops = [rgb[ys[0]:ys[1], xs[0]:xs[1]] for ys, xs in batch]
        for (ys, xs), (b, lab, s) in zip(batch, predictor.predict(crops, score, nms_iou)):
            if len(b):
                b = b + np.array([xs[0], ys[0], xs[0], ys[0]], dtype=np.float64)
                cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
                own = (cx >= xs[2]) & (cx < xs[3]) & (cy >= ys[2]) & (cy < ys[3])
                parts_b.append(b[own])
                parts_l.append(lab[own])
                parts_s.append(s[own])
        del crops
        yield step(min(first + len(batch), total), total)
    if not parts_b:
        return np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros(0)
    b, lab, s = np.concatenate(parts_b), np.concatenate(parts_l), np.concatenate(parts_s)
    keep = s >= score
    b, lab, s = nms(b[keep], lab[keep], s[keep], nms_iou) if len(windows) > 1 else (b[keep], lab[keep], s[keep])
    b[:, 0::2] = b[:, 0::2].clip(0, w)
    b[:, 1::2] = b[:, 1::2].clip(0, h)
    order = np.argsort(-s, kind="stable")
    return b[order], lab[order], s[order]


LAZY_TILE = 2048
"""Tile side for a lazy field when the model states no native size: a lazy field is never read whole."""
BAND_BYTES = 256 * 1024 * 1024
"""Most decoded bytes a lazy field holds at once: a band of tiles one tile high and as many tiles wide as fit."""


def is_lazy_field(image: Any) -> bool:
    """A field read in pieces: a LazyImage (``read``) or a dask array (``dask``), never a plain array."""
    return not isinstance(image, np.ndarray) and hasattr(image, "shape") and (
        hasattr(image, "read") or hasattr(image, "dask"))


class _Bands:
    """Tiles of a lazy field, read one band at a time: the rows of one tile row and as many tile columns as fit in
    :data:`BAND_BYTES` (all of them on any ordinary scan). A tile row's tiles then share one read, so a tiled
    TIFF's tiles are decoded about once (overlaps aside) and a strip TIFF's strips not once per tile. Intensities
    are scaled with the range of the whole field (:func:`lazy_intensity_range`), as the whole array would be."""

    def __init__(self, image: Any, windows: list[tuple[tuple[int, int, float, float], ...]]) -> None:
        self.image = image
        self.value_range = lazy_intensity_range(image)
        height = max(ys[1] - ys[0] for ys, _ in windows)
        column_bytes = max(1, height * _pixel_bytes(image))
        self.groups: list[tuple[int, int]] = []
        self.group_of: dict[tuple[int, int], int] = {}
        for xs in sorted({(xs[0], xs[1]) for _, xs in windows}):
            if self.groups and (xs[1] - self.groups[-1][0]) * column_bytes <= BAND_BYTES:
                self.groups[-1] = (self.groups[-1][0], max(self.groups[-1][1], xs[1]))
            else:
                self.groups.append(xs)
            self.group_of[xs] = len(self.groups) - 1
        self._key: tuple[int, int, int] | None = None
        self._band: np.ndarray | None = None

    def crop(self, ys: tuple, xs: tuple) -> np.ndarray:
        group = self.group_of[(xs[0], xs[1])]
        x0, x1 = self.groups[group]
        if self._key != (ys[0], ys[1], group):
            self._band = None  # let the last band go before the next is read
            self._band = as_rgb(read_region(self.image, ys[0], ys[1], x0, x1), self.value_range)
            self._key = (ys[0], ys[1], group)
        return self._band[:, xs[0] - x0:xs[1] - x0]


def _pixel_bytes(image: Any) -> int:
    channels = int(image.shape[2]) if len(image.shape) == 3 else 1
    return max(channels, 3) * max(np.dtype(image.dtype).itemsize, 1)


def read_region(image: Any, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Rows ``y0:y1``, columns ``x0:x1`` of an array, a LazyImage or a dask array, as a NumPy array."""
    if hasattr(image, "read") and not hasattr(image, "dask"):
        return image.read(y0, y1, x0, x1)
    return np.asarray(image[y0:y1, x0:x1])


def lazy_intensity_range(image: Any) -> tuple[float, float] | None:
    """:func:`intensity_range` of a lazy field, found band by band (None for uint8, which needs no pass)."""
    dtype = np.dtype(image.dtype)
    if dtype == np.uint8:
        return None
    h, w = int(image.shape[0]), int(image.shape[1])
    rows = max(1, BAND_BYTES // max(1, w * _pixel_bytes(image)))
    if hasattr(image, "chunks") and isinstance(image.chunks, tuple) and isinstance(image.chunks[0], int):
        rows = max(image.chunks[0], rows // image.chunks[0] * image.chunks[0])  # whole tiles or strips
    lo, hi = math.inf, -math.inf
    for y0 in range(0, h, rows):
        band = read_region(image, y0, min(h, y0 + rows), 0, w)
        a, b = finite_min_max(band[..., :3] if band.ndim == 3 else band)
        if math.isfinite(a):
            lo, hi = min(lo, a), max(hi, b)
    return display_range(dtype, lo, hi)


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
    """Detect on image files; yields ``(images done, images)`` and returns predictions with per-image timing.

    Images above the lazy threshold (:func:`~..io.lazy_images.lazy_pixels`), pyramidal TIFFs and OME-Zarr folders
    are read tile by tile (level 0 of a pyramid), and their tiles are reported too (``stage="tiles"``), so a slide
    shows progress while it runs; closing the generator stops at the next batch of tiles."""
    from ..io.pyramid import open_detection_field
    from ..progress import drain, relay

    records, times = [], []
    for i, path in enumerate(paths):
        path = Path(path)
        with open_detection_field(path) as field:  # a large scan is read tile by tile, never whole
            h, w = int(field.shape[0]), int(field.shape[1])
            job = detect_array(predictor, field, score, nms_iou, tile, overlap)
            t0 = time.perf_counter()
            dets = (yield from relay(job, "tiles")) if is_lazy_field(field) else drain(job)
            times.append((time.perf_counter() - t0) * 1000.0)
            del field
        records.append(detections_record(path.name, w, h, dets, predictor.model_id, path))
        yield step(i + 1, len(paths))
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
    """Image files named directly or found (sorted, non-recursive, then in ``JPEGImages``/``images``) in folders;
    an OME-Zarr folder is one image."""
    from ..io.images import IMAGE_SUFFIXES
    from ..io.ome_zarr import is_ome_zarr
    from ..untrusted import is_regular_file

    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir() and is_ome_zarr(p):
            out.append(p)
        elif p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and is_regular_file(f))
            for sub in ("JPEGImages", "images"):
                if not found and (p / sub).is_dir():
                    found = sorted(f for f in (p / sub).iterdir()
                                   if f.suffix.lower() in IMAGE_SUFFIXES and is_regular_file(f))
            if not found:
                raise BloodcellInputError("folder holds no images (JPEG, PNG, TIFF, BMP)", p)
            out.extend(found)
        elif p.exists():  # a pipe or device named like an image is refused by the reader, by name
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
    image: Any,
    score: float = 0.3,
    nms_iou: float = 0.5,
    device: str | None = "auto",
    tile: int | None = None,
    overlap: int | None = None,
) -> Generator[Any, None, tuple[list[str], str, Detections]]:
    """The widget's job: load the model (yields a message), detect with per-tile progress; returns
    ``(classes, model_id, detections)``. Loading happens here, in the worker thread, so the viewer never waits."""
    yield note(f"loading {model}", "load")
    predictor = load_predictor(model, device)
    if str(model) != "classical":
        from ..models.recent import remember

        remember(model)
    dets = yield from detect_array(predictor, image, score, nms_iou, tile, overlap)
    return list(predictor.classes), predictor.model_id, dets
