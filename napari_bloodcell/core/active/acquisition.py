"""Acquisition arithmetic: how uncertain an item is, how unlike the reviewed ones it is, and which k to pick.

Pure NumPy, no model: :mod:`.scoring` turns a model's outputs into the inputs here. Every uncertainty is in 0..1
(1 = the model cannot tell), so measures can be averaged and shown side by side.

Strategies (``STRATEGIES``):

* ``uncertainty`` - the k items the model is least sure of (entropy of its scores plus how much its answer
  changes when the image is mirrored);
* ``diversity`` - k-centre greedy on embeddings: each pick is the item farthest from everything reviewed or
  picked so far, so ten near-identical fields are never all chosen;
* ``combined`` - k-centre greedy weighted by uncertainty: each pick maximises (uncertainty rank) x (distance to
  the nearest reviewed or picked item);
* ``random`` - the baseline every other strategy must beat.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ..errors import BloodcellInputError

STRATEGIES = ("combined", "uncertainty", "diversity", "random")
DEFAULT_STRATEGY = "combined"
"""The strategy the simulation of docs/benchmarks.md ("Active learning") supports; see there."""
MAX_K = 10_000


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in bits of a yes/no score (a detection's confidence): 0 at 0 or 1, 1 at 0.5."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def class_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy of each row of class probabilities divided by its maximum (log of the class count): 0..1."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or not len(p):
        return np.zeros(len(p))
    if p.shape[1] < 2:
        return np.zeros(len(p))
    p = np.clip(p / np.maximum(p.sum(1, keepdims=True), 1e-12), 1e-12, 1)
    return -(p * np.log(p)).sum(1) / np.log(p.shape[1])


def margin_uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """1 - (top probability - runner-up): 1 for a coin toss between two classes, 0 when certain."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2 or not len(p):
        return np.zeros(len(p))
    top = np.sort(p, 1)
    return 1.0 - (top[:, -1] - top[:, -2])


def probability_disagreement(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Total variation between two predictions of the same cells (the crop and its mirror image): 0..1."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"predictions of different shapes: {p.shape} and {q.shape}")
    return 0.5 * np.abs(p - q).sum(1) if len(p) else np.zeros(0)


def box_disagreement(boxes_a: np.ndarray, labels_a: np.ndarray, boxes_b: np.ndarray, labels_b: np.ndarray,
                     iou: float = 0.5) -> float:
    """How differently two detections of one field (the image and its mirror, mapped back) see it: 1 - 2M/(A+B),
    where M pairs a box of each with the same label and IoU >= ``iou`` (greedy, best IoU first). 0 when both
    agree box for box (or both are empty), 1 when nothing matches."""
    from ..metrics import iou_matrix

    a, b = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4), np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    if not len(a) and not len(b):
        return 0.0
    m = iou_matrix(a, b)
    m[np.asarray(labels_a)[:, None] != np.asarray(labels_b)[None, :]] = 0.0
    matched = 0
    if m.size:
        pairs = np.argwhere(m >= iou)
        order = np.argsort(-m[pairs[:, 0], pairs[:, 1]], kind="stable")
        used_a, used_b = set(), set()
        for i, j in pairs[order]:
            if i not in used_a and j not in used_b:
                used_a.add(i)
                used_b.add(j)
                matched += 1
    return float(1.0 - 2.0 * matched / (len(a) + len(b)))


def normalised(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, so distances compare directions (cosine) and not brightness or cell count."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be a 2D array; got shape {e.shape}")
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def nearest_distance(embeddings: np.ndarray, centres: np.ndarray | None) -> np.ndarray:
    """Distance of each row of ``embeddings`` to its nearest centre (inf with no centres)."""
    if centres is None or not len(centres):
        return np.full(len(embeddings), np.inf)
    out = np.empty(len(embeddings))
    for start in range(0, len(embeddings), 1024):  # bounded memory for large pools
        chunk = embeddings[start:start + 1024]
        d2 = (chunk ** 2).sum(1)[:, None] - 2 * chunk @ centres.T + (centres ** 2).sum(1)[None]
        out[start:start + 1024] = np.sqrt(np.maximum(d2.min(1), 0))
    return out


def percentile_rank(values: np.ndarray) -> np.ndarray:
    """Each value's rank as a fraction in (0, 1], ties sharing the higher rank: scale-free, so a measure's units
    or spread cannot dominate a combination."""
    v = np.asarray(values, dtype=np.float64)
    if not len(v):
        return v
    order = np.sort(v)
    return np.searchsorted(order, v, side="right") / len(v)


@dataclasses.dataclass
class Selection:
    """The items picked, in the order to review them, and why."""

    order: list[int]
    """Indices into the pool, first to review first."""
    score: list[float]
    """The strategy's score at the moment each was picked, 0..1: the uncertainty; half the distance to the
    nearest reviewed or picked item (1 while none is; diversity's first pick with nothing reviewed scores how
    typical it is); that distance times the uncertainty's percentile rank; 0 for random."""
    strategy: str


def select(strategy: str, k: int, uncertainty: Sequence[float] | np.ndarray | None = None,
           embeddings: np.ndarray | None = None, reviewed: np.ndarray | None = None,
           seed: int = 0) -> Selection:
    """Pick ``k`` items of a pool by ``strategy``. ``uncertainty`` (0..1 per item) is needed by ``uncertainty``
    and ``combined``; ``embeddings`` (one row per item) by ``diversity`` and ``combined``; ``reviewed`` are the
    embeddings of items already reviewed (they count as picked, so the first pick is far from them)."""
    if strategy not in STRATEGIES:
        raise BloodcellInputError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    n = len(uncertainty) if uncertainty is not None else len(embeddings) if embeddings is not None else None
    if n is None:
        raise BloodcellInputError(f"strategy {strategy!r} needs the items' uncertainty or embeddings")
    if not 1 <= k <= MAX_K:
        raise BloodcellInputError(f"k must be in 1..{MAX_K}; got {k}")
    if seed < 0:
        raise BloodcellInputError(f"the seed must be 0 or more; got {seed}")
    k = min(k, n)
    if strategy == "random":
        rng = np.random.default_rng(seed)
        return Selection([int(i) for i in rng.permutation(n)[:k]], [0.0] * k, strategy)
    if strategy in ("uncertainty", "combined") and uncertainty is None:
        raise BloodcellInputError(f"strategy {strategy!r} needs the items' uncertainty")
    if strategy in ("diversity", "combined") and embeddings is None:
        raise BloodcellInputError(f"strategy {strategy!r} needs the items' embeddings")
    if strategy == "uncertainty":
        u = np.asarray(uncertainty, dtype=np.float64)
        order = np.argsort(-u, kind="stable")[:k]
        return Selection([int(i) for i in order], [float(u[i]) for i in order], strategy)
    emb = normalised(embeddings).astype(np.float32)  # float32 halves a large pool's memory
    if len(emb) != n:
        raise ValueError(f"{len(emb)} embeddings for {n} items")
    bad = ~np.isfinite(emb).all(1)
    emb[bad] = 0.0  # a NaN row would poison every distance; such items come last
    if strategy == "diversity":
        weight = np.ones(n)
    else:
        u = np.asarray(uncertainty, dtype=np.float64)
        weight = percentile_rank(np.where(np.isfinite(u), u, -np.inf))
    weight[bad] = 0.0
    centres = None
    if reviewed is not None and len(reviewed):
        reviewed = np.asarray(reviewed)
        if reviewed.ndim != 2 or reviewed.shape[1] != emb.shape[1]:
            raise BloodcellInputError(f"the reviewed items' embeddings have shape {reviewed.shape}; the pool's "
                                      f"have {emb.shape[1]} features")
        centres = normalised(reviewed).astype(np.float32)
        centres = centres[np.isfinite(centres).all(1)]
    dist = nearest_distance(emb, centres if centres is not None and len(centres) else None)
    order: list[int] = []
    scores: list[float] = []
    for _ in range(k):
        # unit vectors are at most 2 apart, so half the distance is 0..1 (1 while nothing is reviewed yet)
        value = weight * np.where(np.isfinite(dist), dist / 2, 1.0)
        if dist.size and np.isinf(dist).all() and not order and strategy == "diversity":
            value = 1.0 - np.linalg.norm(emb - emb.mean(0), axis=1) / 2  # no anchor: start from the most typical
            value[bad] = 0.0
        value[order] = -1.0
        i = int(np.argmax(value))
        order.append(i)
        scores.append(float(max(value[i], 0.0)))
        # |a - b| of unit vectors from their dot product: no (n, d) temporary per pick
        step = np.sqrt(np.maximum(2.0 - 2.0 * (emb @ emb[i]), 0.0)) if not bad[i] else np.full(n, np.inf)
        dist = np.minimum(dist, step)
    return Selection(order, scores, strategy)
