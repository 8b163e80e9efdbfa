"""Classification metrics equal scikit-learn's on fixed examples; intervals are exact or bootstrap and cover the
estimate; the SVM and gradient-boosting models kept as arrays predict exactly as scikit-learn does."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from napari_bloodcell.core.classification_metrics import (
    _auc,
    classification_report,
    multilabel_report,
    paired_cells,
    screen_report,
)
from napari_bloodcell.core.io.records import AnnotationSet, ImageRecord
from napari_bloodcell.core.models.shallow import BoostedScreen, LinearOvR
from napari_bloodcell.core.plots import plot_confusion_normalised, plot_roc

Y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 0, 1])
P = np.array([
    [0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.5, 0.4, 0.1],
    [0.1, 0.1, 0.8], [0.2, 0.2, 0.6], [0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.9, 0.05, 0.05], [0.4, 0.4, 0.2],
])


def test_single_label_metrics_match_scikit_learn():
    r = classification_report(Y, P, ["N", "L", "M"], n_boot=200)
    pred = P.argmax(1)
    assert r["accuracy"]["value"] == pytest.approx(accuracy_score(Y, pred))
    assert r["kappa"]["value"] == pytest.approx(cohen_kappa_score(Y, pred))
    assert r["macro_f1"] == pytest.approx(f1_score(Y, pred, average="macro"))
    assert r["macro_auc"] == pytest.approx(roc_auc_score(Y, P, multi_class="ovr", average="macro"))
    prec = precision_score(Y, pred, average=None)
    rec = recall_score(Y, pred, average=None)
    for i, name in enumerate(["N", "L", "M"]):
        c = r["per_class"][name]
        assert c["precision"]["value"] == pytest.approx(prec[i])
        assert c["recall"]["value"] == pytest.approx(rec[i])
        neg = Y != i
        assert c["specificity"]["value"] == pytest.approx(((pred != i) & neg).sum() / neg.sum())
        assert c["TP"] + c["TN"] + c["FP"] + c["FN"] == len(Y)
        lo, hi = c["auc"]["ci95"]
        assert lo <= c["auc"]["value"] <= hi
    rows = np.array(r["confusion_normalised"])
    np.testing.assert_allclose(rows.sum(1), 1.0, atol=1e-3)
    assert r["confusion"][2] == [0, 1, 3]  # the true M row: one taken for L, three right


def test_exact_interval_for_a_small_class():
    """Clopper-Pearson for 0 of 10 is [0, 0.3085] (the standard table value)."""
    y = np.array([0] * 10 + [1] * 10)
    p = np.tile([[0.2, 0.8]], (20, 1))  # everything called class 1
    r = classification_report(y, p, ["a", "b"], n_boot=50)
    lo, hi = r["per_class"]["a"]["recall"]["ci95"]
    assert lo == 0 and hi == pytest.approx(0.3085, abs=1e-4)


def test_fast_auc_equals_scikit_learn_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 1)  # many ties
    assert _auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_multilabel_metrics():
    y = np.array([[1, 0], [1, 1], [0, 1], [0, 0], [1, 0]])
    p = np.array([[0.9, 0.2], [0.7, 0.4], [0.3, 0.8], [0.1, 0.1], [0.4, 0.3]])
    r = multilabel_report(y, p, ["disc", "sickle"], n_boot=100)
    assert r["exact_match"]["value"] == pytest.approx(accuracy_score(y, p >= 0.5))
    assert r["per_label"]["disc"]["auc"]["value"] == pytest.approx(roc_auc_score(y[:, 0], p[:, 0]))
    assert r["per_label"]["sickle"]["recall"]["value"] == pytest.approx(0.5)


def test_screen_report():
    r = screen_report(np.array([1, 0, 1, 0]), np.array([0.9, 0.2, 0.4, 0.6]), n_boot=50)
    assert r["accuracy"]["value"] == 0.5 and r["sensitivity"]["value"] == 0.5 and r["auc"]["value"] == 0.75


def test_linear_svm_and_boosting_match_scikit_learn_exactly():
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 6))
    y = rng.integers(0, 3, 150)
    x[:, 0] += y
    test = rng.normal(size=(40, 6))
    svm = LinearOvR.from_state(LinearOvR.fit(x, y, 3).to_state())
    scaler = StandardScaler().fit(x)
    ref = OneVsRestClassifier(LinearSVC(class_weight="balanced", max_iter=20000, random_state=0))
    ref.fit(scaler.transform(x), y)
    np.testing.assert_allclose(svm.decision(test), ref.decision_function(scaler.transform(test)), atol=1e-9)
    abnormal = (x[:, 1] + x[:, 2] ** 2 > 1).astype(int)
    gb = GradientBoostingClassifier(random_state=0).fit(x, abnormal)
    screen = BoostedScreen.from_state(BoostedScreen.from_sklearn(gb).to_state())
    np.testing.assert_allclose(screen.probability(test), gb.predict_proba(test)[:, 1], atol=1e-12)


def test_pairing_predicted_types_with_ground_truth_boxes(tmp_path):
    gt = AnnotationSet(["RBC", "NEUTROPHIL", "LYMPHOCYTE"], [
        ImageRecord("a.jpg", 100, 100, [[0, 0, 20, 20], [50, 50, 80, 80], [10, 60, 30, 90]], [0, 1, 2])])
    probs = [{"class_probabilities": {"NEUTROPHIL": 0.7, "LYMPHOCYTE": 0.3}},
             {"class_probabilities": {"NEUTROPHIL": 0.2, "LYMPHOCYTE": 0.8}}]
    pred = AnnotationSet(["RBC", "NEUTROPHIL", "LYMPHOCYTE"], [
        ImageRecord("a.png", 100, 100, [[51, 50, 80, 81], [0, 0, 20, 20]], [1, 2], attributes=probs)])
    cells = paired_cells(gt, pred)
    assert cells["classes"] == ["NEUTROPHIL", "LYMPHOCYTE"]
    assert cells["y"].tolist() == [0] and cells["missed"] == 1  # the RBC box is not scored; the lymphocyte missed
    np.testing.assert_allclose(cells["scores"], [[0.7, 0.3]])


def test_plots_are_written(tmp_path):
    r = classification_report(Y, P, ["N", "L", "M"], n_boot=20)
    assert plot_confusion_normalised(r, tmp_path).stat().st_size > 1000
    assert plot_roc(Y, P, ["N", "L", "M"], tmp_path).stat().st_size > 1000
