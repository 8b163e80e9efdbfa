"""The differential count: cells per class over the classified cells, each with an exact 95% interval.

Counts of a hundred or two cells are small samples (5 monocytes in 100 cells: 2-11%), so each percentage comes
with its Clopper-Pearson interval (beta quantiles from scipy's ``betaincinv``; the test checks them against
``scipy.stats.binomtest(...).proportion_ci(method="exact")``), the interval Rümke's tables give. Cells marked *not classed* (smudges, artefacts) and boxes rejected as not cells are left out
of the denominator; unreviewed model classes are counted but reported, so a draft count is never taken for a
signed one.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from pathlib import Path

import numpy as np

from .atomic import ExistPolicy, atomic_write_text

EXCLUDED_STATES = ("not_classed", "rejected")


@dataclasses.dataclass
class ClassCount:
    name: str
    count: int
    percent: float
    low: float
    high: float
    unreviewed: int


@dataclasses.dataclass
class Differential:
    rows: list[ClassCount]
    total: int
    not_classed: int
    unreviewed: int
    confidence: float = 0.95
    apart: dict[str, int] = dataclasses.field(default_factory=dict)
    """Cells of the classes outside the count (red cells, platelets), reported as plain counts."""

    def as_dict(self) -> dict:
        return {"total": self.total, "not_classed": self.not_classed, "unreviewed": self.unreviewed,
                "confidence": self.confidence, "classes": [dataclasses.asdict(r) for r in self.rows],
                "counted_apart": dict(self.apart)}


def exact_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval for k successes in n trials, in percent."""
    if n == 0:
        return float("nan"), float("nan")
    from scipy.special import (
        betaincinv,  # the beta quantiles; scipy.stats would add 0.8 s to opening a review
    )

    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(betaincinv(k, n - k + 1, alpha / 2))
    high = 1.0 if k == n else float(betaincinv(k + 1, n - k, 1 - alpha / 2))
    return 100.0 * low, 100.0 * high


def differential(classes: list[str], labels: np.ndarray, reviews: np.ndarray, count_classes: list[str] | None = None,
                 confidence: float = 0.95) -> Differential:
    """Counts per class; ``count_classes`` limits the count to some classes (e.g. the white-cell types)."""
    labels = np.asarray(labels, dtype=np.int64)
    reviews = np.asarray(reviews, dtype=object)
    chosen = list(count_classes) if count_classes else list(classes)
    unknown = [c for c in chosen if c not in classes]
    if unknown:
        from .errors import BloodcellInputError

        raise BloodcellInputError(f"cannot count classes {unknown}: the classes are {classes}")
    in_scope = np.isin(labels, [classes.index(c) for c in chosen])
    classified = in_scope & ~np.isin(reviews, EXCLUDED_STATES)
    total = int(classified.sum())
    rows = []
    for name in chosen:
        hit = classified & (labels == classes.index(name))
        k = int(hit.sum())
        low, high = exact_interval(k, total, confidence)
        rows.append(ClassCount(name, k, 100.0 * k / total if total else float("nan"), low, high,
                               int((hit & (reviews == "unreviewed")).sum())))
    return Differential(rows, total, int((in_scope & (reviews == "not_classed")).sum()),
                        int((classified & (reviews == "unreviewed")).sum()), confidence,
                        other_counts(classes, labels, reviews, chosen))


def differential_csv(diff: Differential) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    level = f"{round(diff.confidence * 100)}%"
    writer.writerow(["class", "count", "percent", f"{level} low", f"{level} high", "unreviewed"])
    for r in diff.rows:
        writer.writerow([r.name, r.count, f"{r.percent:.1f}", f"{r.low:.1f}", f"{r.high:.1f}", r.unreviewed])
    writer.writerow(["classified cells", diff.total, "", "", "", diff.unreviewed])
    writer.writerow(["not classed (excluded)", diff.not_classed, "", "", "", ""])
    for name, count in diff.apart.items():
        writer.writerow([f"{name} (counted apart)", count, "", "", "", ""])
    return buffer.getvalue()


def write_differential_csv(diff: Differential, path: str | Path, exist: ExistPolicy = "refuse") -> Path:
    return atomic_write_text(path, differential_csv(diff), exist=exist)


def typed_classes(classes: list[str], attributes: np.ndarray | list) -> list[str] | None:
    """The classes a single-label classifier typed in this table (the keys of its ``class_probabilities``), so
    the differential counts white-cell types rather than every object on the slide; None when nothing was
    typed."""
    for a in attributes:
        if isinstance(a, dict) and a.get("class_probabilities") and "labels" not in a:
            keys = [c for c in classes if c in a["class_probabilities"]]  # in the table's order
            if keys:
                return keys
    return None


NOT_WHITE = re.compile(r"(^|[^a-z])(rbc|red|erythro|plt|platelet|thrombo)", re.IGNORECASE)
"""Class names of red cells and platelets: counted, but never part of a white-cell differential."""


def white_cell_classes(classes: list[str], attributes: np.ndarray | list, fallback: bool = True) -> list[str]:
    """The classes a differential counts: the white-cell types a classifier typed, else every class that is not a
    red cell or a platelet (a detector's RBC/WBC/Platelets gives WBC only: red cells at 67% of a "differential"
    is not what a laboratory means by one). With ``fallback``, a table of none of those counts every class; a
    case needs an empty answer instead (a case of red cells only has no white-cell differential)."""
    from .morphology import is_red_cell_class

    typed = [c for c in typed_classes(classes, attributes) or [] if not is_red_cell_class(c)]
    if typed:
        return typed
    found = [c for c in classes if not NOT_WHITE.search(c) and not is_red_cell_class(c)]
    return found or (list(classes) if fallback else [])


def other_counts(classes: list[str], labels: np.ndarray, reviews: np.ndarray, counted: list[str]) -> dict[str, int]:
    """Cells of the classes outside the differential (red cells, platelets), as plain counts."""
    labels, reviews = np.asarray(labels, dtype=np.int64), np.asarray(reviews, dtype=object)
    kept = ~np.isin(reviews, EXCLUDED_STATES)
    return {c: int((kept & (labels == k)).sum()) for k, c in enumerate(classes) if c not in counted}
