"""What a case adds up to: the white-cell differential towards its target count, absolute counts, reference-range
flags, red-cell grades, the model-reviewer agreement and the case-wide review queue.

Everything here reads the fields' annotation tables and never changes them, so the Case panel, ``bloodcell case``
and the report all show the same numbers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .annotations import AnnotationTable
from .differential import (
    EXCLUDED_STATES,
    ClassCount,
    Differential,
    differential,
    exact_interval,
    white_cell_classes,
)
from .morphology import GradingTable, MorphologyGrade, default_grading, is_red_cell_class, red_cell_grades

DEFAULT_REFERENCE: dict[str, tuple[float, float]] = {
    # adult peripheral blood, percent of white cells; illustrative defaults, replace with the laboratory's own
    "neutrophil": (40, 75), "lymphocyte": (20, 45), "monocyte": (2, 10), "eosinophil": (1, 6), "basophil": (0, 1),
}
REFERENCE_SOURCE = "illustrative adult ranges (percent); a laboratory must enter and validate its own"
REVIEWED = ("accepted", "corrected", "not_classed")


def reference_for(name: str, reference: dict[str, Any] | None) -> tuple[float, float] | None:
    """The range for a class, matched case-insensitively by stem (``Neutrophils``, ``neutrophil (seg)``)."""
    table = reference if reference is not None else DEFAULT_REFERENCE
    low = name.lower()
    for key, pair in table.items():
        stem = key.lower().rstrip("s")
        if low == key.lower() or low.startswith(stem[:max(4, len(stem) - 2)]):
            return float(pair[0]), float(pair[1])
    return None


@dataclasses.dataclass
class WhiteRow(ClassCount):
    """A differential row with what a case adds: the absolute count and the reference range."""

    per_litre: float | None
    reference: tuple[float, float] | None
    flag: str | None
    """``low`` or ``high`` when the percentage lies outside the reference range."""


@dataclasses.dataclass
class Agreement:
    name: str
    reviewed: int
    agreed: int
    percent: float
    low: float
    high: float


@dataclasses.dataclass
class CaseStats:
    white: list[WhiteRow]
    white_total: int
    target: int
    not_classed: int
    unreviewed: int
    red_total: int
    red: list[MorphologyGrade]
    agreement: list[Agreement]
    agreement_total: Agreement | None
    other: dict[str, int]
    models: list[str]
    grading: dict[str, Any]
    reference_source: str

    @property
    def remaining(self) -> int:
        return max(0, self.target - self.white_total)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["remaining"] = self.remaining
        return out


@dataclasses.dataclass
class Pooled:
    """The fields' tables stacked into one set of columns over a shared class list."""

    classes: list[str]
    labels: np.ndarray
    reviews: np.ndarray
    flags: list
    attributes: list
    sources: list
    scores: np.ndarray


def pool(tables: list[AnnotationTable]) -> Pooled:
    classes = list(dict.fromkeys(c for t in tables for c in t.classes)) or ["cell"]
    parts = [np.asarray([classes.index(c) for c in t.classes], dtype=np.int64)[t.col("label")] for t in tables]
    return Pooled(classes, np.concatenate(parts) if parts else np.zeros(0, np.int64),
                  np.concatenate([t.col("review") for t in tables]) if tables else np.zeros(0, object),
                  [f for t in tables for f in t.col("flags")], [a for t in tables for a in t.col("attributes")],
                  [s for t in tables for s in t.col("source")],
                  np.concatenate([t.col("score") for t in tables]) if tables else np.zeros(0))


def model_class(label: str, review: str, attributes: Any) -> str | None:
    """The class the model gave before review: recorded on the first correction, else the current class."""
    if isinstance(attributes, dict) and isinstance(attributes.get("model_class"), str):
        return attributes["model_class"]
    return label if review in ("accepted", "unreviewed", "not_classed") else None


def agreement(p: Pooled, confidence: float = 0.95, white: list[str] | None = None
              ) -> tuple[list[Agreement], Agreement | None]:
    """Per model class, the share of reviewed cells whose final class is the model's (exact interval), and the
    overall share over the white-cell classes when there are any (red cells, thousands of easy ones, would
    otherwise swamp the figure that judges a white-cell pre-classifier), else over every class."""
    by: dict[str, list[int]] = {}
    for label, review, attrs, source in zip(p.labels, p.reviews, p.attributes, p.sources, strict=True):
        if review not in REVIEWED or source in ("points", "file"):
            continue
        first = model_class(p.classes[int(label)], review, attrs)
        if first is None:
            continue
        agreed = review != "not_classed" and first == p.classes[int(label)]
        by.setdefault(first, [0, 0])
        by[first][0] += 1
        by[first][1] += int(agreed)
    rows = []
    for name in [c for c in p.classes if c in by]:
        n, k = by[name]
        rows.append(Agreement(name, n, k, 100.0 * k / n, *exact_interval(k, n, confidence)))
    scope = [c for c in by if c in (white or [])]
    label = "white cells" if scope else "all cells"
    scope = scope or list(by)
    n, k = sum(by[c][0] for c in scope), sum(by[c][1] for c in scope)
    total = Agreement(label, n, k, 100.0 * k / n, *exact_interval(k, n, confidence)) if n else None
    return rows, total


def case_stats(tables: list[AnnotationTable], target: int = 100, wbc_per_litre: float | None = None,
               reference: dict[str, Any] | None = None, grading: GradingTable | None = None) -> CaseStats:
    p = pool(tables)
    counted = white_cell_classes(p.classes, p.attributes, fallback=False)
    diff: Differential = differential(p.classes, p.labels, p.reviews, count_classes=counted) if counted else \
        Differential([], 0, 0, 0)
    white = []
    for r in diff.rows:
        ref = reference_for(r.name, reference)
        flag = None
        if ref is not None and diff.total and np.isfinite(r.percent):
            flag = "low" if r.percent < ref[0] else "high" if r.percent > ref[1] else None
        per_litre = wbc_per_litre * r.percent / 100.0 if wbc_per_litre and diff.total else None
        white.append(WhiteRow(**dataclasses.asdict(r), per_litre=per_litre, reference=ref, flag=flag))
    grading = grading or default_grading()
    red_total, red = red_cell_grades(p.classes, p.labels, p.reviews, p.flags, grading)
    rows, total = agreement(p, white=counted)
    kept = ~np.isin(p.reviews, EXCLUDED_STATES)
    other = {c: int((kept & (p.labels == k)).sum()) for k, c in enumerate(p.classes)
             if c not in counted and not is_red_cell_class(c)}
    models = sorted({str(s) for s, sc in zip(p.sources, p.scores, strict=True) if np.isfinite(sc) and s})
    return CaseStats(white, diff.total, int(target), diff.not_classed, diff.unreviewed, red_total, red, rows, total,
                     other, models, grading.as_dict(),
                     REFERENCE_SOURCE if reference is None else "laboratory ranges (percent)")


def case_queue(tables: list[tuple[str, AnnotationTable | None]]) -> list[tuple[str, int, float]]:
    """Unreviewed cells of the whole case, least certain first: (field key, cell id, certainty). Ties keep field
    order, then position, so the queue is stable between calls."""
    keys, ids, certainty, order = [], [], [], []
    for f, (key, table) in enumerate(tables):
        if table is None:
            continue
        q = table.queue()
        if not len(q):
            continue
        pos = table.positions(q)
        keys.extend([key] * len(q))
        ids.append(q)
        certainty.append(table.uncertainty()[pos])
        order.append(np.stack([np.full(len(q), f), np.arange(len(q))], 1))
    if not ids:
        return []
    c, o = np.concatenate(certainty), np.concatenate(order)
    idx = np.lexsort((o[:, 1], o[:, 0], c))
    all_ids = np.concatenate(ids)
    return [(keys[i], int(all_ids[i]), float(c[i])) for i in idx]
