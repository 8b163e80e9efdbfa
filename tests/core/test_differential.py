"""Differential counts: not-classed cells leave the denominator; intervals are exact (Clopper-Pearson)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import beta

from napari_bloodcell.core.differential import (
    differential,
    differential_csv,
    exact_interval,
    write_differential_csv,
)
from napari_bloodcell.core.errors import BloodcellInputError


def test_five_in_a_hundred_matches_the_beta_quantiles():
    low, high = exact_interval(5, 100)
    assert low == pytest.approx(100 * beta.ppf(0.025, 5, 96), abs=1e-6)
    assert high == pytest.approx(100 * beta.ppf(0.975, 6, 95), abs=1e-6)
    assert 1.6 < low < 1.7 and 11.1 < high < 11.3  # the guide's "about 2-11%"


@pytest.mark.parametrize(("k", "n"), [(0, 10), (10, 10), (3, 7), (47, 200)])
def test_intervals_match_scipy_binomtest(k, n):
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert exact_interval(k, n) == pytest.approx((100 * ci.low, 100 * ci.high), abs=1e-8)


def test_counts_exclude_not_classed_and_rejected():
    classes = ["Neutrophil", "Lymphocyte", "Monocyte"]
    labels = np.array([0] * 6 + [1] * 3 + [2] + [0, 1])
    reviews = np.array(["accepted"] * 10 + ["not_classed", "rejected"], dtype=object)
    reviews[0] = "unreviewed"
    d = differential(classes, labels, reviews)
    assert d.total == 10 and d.not_classed == 1 and d.unreviewed == 1
    assert [(r.name, r.count, r.percent) for r in d.rows] == [("Neutrophil", 6, 60.0), ("Lymphocyte", 3, 30.0),
                                                              ("Monocyte", 1, 10.0)]
    assert d.rows[0].unreviewed == 1
    only = differential(classes, labels, reviews, count_classes=["Lymphocyte", "Monocyte"])
    assert only.total == 4 and only.rows[0].percent == 75.0
    with pytest.raises(BloodcellInputError, match="Blast"):
        differential(classes, labels, reviews, count_classes=["Blast"])


def test_csv_is_written_once_and_never_over(tmp_path):
    d = differential(["A", "B"], np.array([0, 1, 1]), np.array(["accepted"] * 3, dtype=object))
    text = differential_csv(d)
    assert text.splitlines()[1].startswith("A,1,33.3,")
    path = write_differential_csv(d, tmp_path / "diff.csv")
    with pytest.raises(BloodcellInputError, match="already exists"):
        write_differential_csv(d, path)


def test_empty_count_has_no_percentages():
    d = differential(["A"], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object))
    assert d.total == 0 and np.isnan(d.rows[0].percent)


def test_a_detector_s_classes_give_a_white_cell_differential_with_red_cells_apart():
    from napari_bloodcell.core.differential import white_cell_classes

    classes = ["RBC", "WBC", "Platelets"]
    counted = white_cell_classes(classes, [{}] * 5)
    assert counted == ["WBC"]
    assert white_cell_classes(["Red blood cell", "neutrophil", "lymphocyte", "PLT"], []) == ["neutrophil",
                                                                                           "lymphocyte"]
    d = differential(classes, np.array([0, 0, 0, 1, 2]), np.array(["accepted"] * 4 + ["rejected"], dtype=object),
                     count_classes=counted)
    assert [r.name for r in d.rows] == ["WBC"] and d.total == 1 and d.rows[0].percent == 100.0
    assert d.apart == {"RBC": 3, "Platelets": 0}
    assert "RBC (counted apart),3" in differential_csv(d)
