"""Red-cell morphology: which classes are red cells, and the grade a case's share of each morphology earns.

A red-cell morphology report gives, per abnormal type, the share of red cells that show it and a semi-quantitative
grade. The default grade boundaries follow the three-grade scheme of the ICSH recommendation (Palmer L, Briggs C,
McFadden S, et al. ICSH recommendations for the standardization of nomenclature and grading of peripheral blood
cell morphological features. Int J Lab Hematol 2015;37:287-303), with schistocytes following the ICSH schistocyte
recommendation (Zini G, et al. Int J Lab Hematol 2012;34:107-116: above 1% is significant in adults). The table is
data, not code: a laboratory loads its own (``--grading FILE``) and must validate it; docs/cases.md says so.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BloodcellInputError
from .untrusted import class_name, finite, load_json

GRADES = ("normal", "1+", "2+", "3+")
GRADE_WORDS = {"normal": "none/occasional", "1+": "few", "2+": "moderate", "3+": "many"}
NORMAL_TYPES = ("normal", "rbc", "red blood cell", "red cell", "erythrocyte", "uncategorised", "uncategorized")
"""Red-cell classes that are not an abnormal morphology (counted in the denominator, never graded)."""
ALIASES = {"burr cell": ("echinocyte", "burr"), "teardrop": ("dacrocyte", "tear drop", "teardrop cell"),
           "target cell": ("codocyte", "target"), "schistocyte": ("fragment", "fragmented cell"),
           "hypochromia": ("hypochromic", "hypochromic cell"), "elliptocyte": ("elliptocytes",),
           "spherocyte": ("spherocytes",), "ovalocyte": ("ovalocytes",)}

DEFAULT_GRADING: dict[str, tuple[float, float, float]] = {
    # lower bound (percent of red cells) of grade 1+, 2+ and 3+
    "macrocyte": (11, 21, 51), "microcyte": (11, 21, 51), "hypochromia": (11, 21, 51),
    "target cell": (11, 21, 51), "stomatocyte": (11, 21, 51), "ovalocyte": (11, 21, 51),
    "elliptocyte": (11, 21, 51), "burr cell": (11, 21, 51),
    "spherocyte": (5, 21, 51), "teardrop": (5, 21, 51),
    "schistocyte": (1, 5, 10),
}
GRADING_SOURCE = ("ICSH 2015 (Palmer et al., Int J Lab Hematol 37:287-303); schistocytes ICSH 2012 (Zini et al., "
                  "Int J Lab Hematol 34:107-116). Defaults only: every laboratory must validate its own table.")

RED_WORDS = re.compile(r"(^|[^a-z])(rbc|red|erythro)", re.IGNORECASE)


def canonical(name: str) -> str:
    """The grading table's name for a class (``Echinocyte`` -> ``burr cell``); unknown names are kept, lowered."""
    low = " ".join(str(name).lower().replace("_", " ").split())
    for key, words in ALIASES.items():
        if low == key or low in words:
            return key
    return low


def is_red_cell_class(name: str) -> bool:
    """Red cells: plain RBC classes and every red-cell morphology type."""
    c = canonical(name)
    return bool(RED_WORDS.search(name)) or c in NORMAL_TYPES or c in DEFAULT_GRADING or c in {
        "macrocyte", "microcyte", "spherocyte", "target cell", "stomatocyte", "ovalocyte", "teardrop",
        "burr cell", "schistocyte", "hypochromia", "elliptocyte", "acanthocyte", "sickle cell"}


@dataclasses.dataclass
class GradingTable:
    thresholds: dict[str, tuple[float, float, float]]
    source: str = GRADING_SOURCE

    def grade(self, name: str, percent: float) -> str | None:
        """``normal``/``1+``/``2+``/``3+`` for a morphology's share, None when the table does not grade it."""
        bounds = self.thresholds.get(canonical(name))
        if bounds is None or not np.isfinite(percent):
            return None
        return GRADES[int(np.searchsorted(np.asarray(bounds), percent, side="right"))]

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "thresholds": {k: list(v) for k, v in self.thresholds.items()}}


def default_grading() -> GradingTable:
    return GradingTable(dict(DEFAULT_GRADING))


def load_grading(path: str | Path) -> GradingTable:
    """A lab's table: ``{"source": "...", "thresholds": {"spherocyte": [5, 21, 51], ...}}`` (percent lower bounds
    of 1+, 2+, 3+, rising). Types not in the file keep the defaults."""
    path = Path(path)
    data = load_json(path, 1 << 20)
    if not isinstance(data, dict) or not isinstance(data.get("thresholds"), dict):
        raise BloodcellInputError("is not a grading table (needs a 'thresholds' object)", path)
    table = dict(DEFAULT_GRADING)
    for name, bounds in data["thresholds"].items():
        key = canonical(class_name(name, path))
        if not isinstance(bounds, list) or len(bounds) != 3:
            raise BloodcellInputError(f"{name}: needs three lower bounds (1+, 2+, 3+) in percent", path)
        values = tuple(finite(b, f"{name}'s bound", path, bound=100) for b in bounds)
        if not (0 <= values[0] < values[1] < values[2] <= 100):
            raise BloodcellInputError(f"{name}: bounds must rise within 0..100, got {list(values)}", path)
        table[key] = values
    return GradingTable(table, str(data.get("source") or f"laboratory table {path.name}")[:300])


@dataclasses.dataclass
class MorphologyGrade:
    name: str
    count: int
    percent: float
    low: float
    high: float
    grade: str | None


def red_cell_grades(classes: list[str], labels: np.ndarray, reviews: np.ndarray, flags: list | np.ndarray,
                    table: GradingTable | None = None, confidence: float = 0.95) -> tuple[int, list[MorphologyGrade]]:
    """Red cells counted and, per abnormal morphology, its share (exact interval) and grade.

    A cell counts for a morphology when that is its class or one of its flags (paper 001's multi-label heads give
    a cell several); rejected and not-classed cells are left out."""
    from .differential import EXCLUDED_STATES, exact_interval

    table = table or default_grading()
    labels = np.asarray(labels, dtype=np.int64)
    reviews = np.asarray(reviews, dtype=object)
    red = np.asarray([is_red_cell_class(c) for c in classes] + [False], dtype=bool)[labels] if len(labels) else \
        np.zeros(0, dtype=bool)
    counted = red & ~np.isin(reviews, EXCLUDED_STATES)
    total = int(counted.sum())
    names = [c for c in classes if is_red_cell_class(c) and canonical(c) not in NORMAL_TYPES]
    flag_names = sorted({canonical(f) for f, keep in _flag_pairs(flags, counted) if keep} - set(map(canonical, names)))
    rows = []
    for name in names + flag_names:
        key = canonical(name)
        hit = counted & ((labels == classes.index(name)) if name in classes else False)
        hit = hit | np.asarray([keep and any(canonical(f) == key for f in (fl or []))
                                for fl, keep in zip(flags, counted, strict=True)], dtype=bool)
        k = int(hit.sum())
        low, high = exact_interval(k, total, confidence)
        percent = 100.0 * k / total if total else float("nan")
        rows.append(MorphologyGrade(name, k, percent, low, high, table.grade(name, percent)))
    return total, rows


def _flag_pairs(flags: list | np.ndarray, counted: np.ndarray):
    for fl, keep in zip(flags, counted, strict=True):
        for f in fl or []:
            yield f, bool(keep)
