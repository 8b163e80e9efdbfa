"""Cases: fields of one slide, their states, the case-wide queue and statistics, grading and the case sign-off."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_bloodcell.core.annotations import AnnotationTable
from napari_bloodcell.core.case_stats import case_queue, case_stats, reference_for
from napari_bloodcell.core.cases import Case, CaseSettings, case_statistics, check_case_name, list_cases
from napari_bloodcell.core.differential import exact_interval
from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.morphology import canonical, default_grading, is_red_cell_class, load_grading
from napari_bloodcell.core.review_project import ReviewProject

CLASSES = ["neutrophil", "lymphocyte", "monocyte", "RBC", "spherocyte", "Platelets"]


def _images(folder, n=3, seed=0):
    import imageio.v3 as iio

    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        iio.imwrite(folder / f"field{i}.png", rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    return folder


def _case(tmp_path, n=3) -> Case:
    project = ReviewProject(tmp_path / "project")
    case = Case.create(project, "patient 7", by="ann")
    case.add_images([_images(tmp_path / "fields", n)])
    return case


def _fill(case: Case, labels_per_field, scores_per_field):
    for f, labels, scores in zip(case.fields, labels_per_field, scores_per_field, strict=True):
        t = AnnotationTable(CLASSES)
        t.add(np.tile([1.0, 1, 9, 9], (len(labels), 1)), labels, "model-v3", scores=scores, review="unreviewed")
        case.project.save(f.key, t, {"file_name": f.file_name, "width": 50, "height": 40, "digest": f.digest})


def test_case_keeps_fields_in_order_and_refuses_bad_names(tmp_path):
    case = _case(tmp_path)
    assert [f.file_name for f in case.fields] == ["field0.png", "field1.png", "field2.png"]
    again = Case.open(case.project, "patient 7")
    assert [f.key for f in again.fields] == [f.key for f in case.fields]
    assert again.add_images([tmp_path / "fields"]) == []  # the same pictures are not added twice
    assert list_cases(case.project) == ["patient 7"]
    for bad in ("../x", "", ".hidden", "a/b", "x" * 81, "con\n"):
        with pytest.raises(BloodcellInputError):
            check_case_name(bad)
    with pytest.raises(BloodcellInputError, match="already exists"):
        Case.create(case.project, "patient 7")
    with pytest.raises(BloodcellInputError, match="no case"):
        Case.open(case.project, "patient 8")


def test_hostile_case_file_is_one_error(tmp_path):
    case = _case(tmp_path)
    data = json.loads(case.path.read_text())
    data["fields"][0]["key"] = "../../etc/passwd"
    case.path.write_text(json.dumps(data))
    with pytest.raises(BloodcellInputError, match="malformed key"):
        Case.open(case.project, "patient 7")
    data["fields"] = "x"
    case.path.write_text(json.dumps(data))
    with pytest.raises(BloodcellInputError):
        Case.open(case.project, "patient 7")
    data = {"format": "napari-bloodcell/case", "fields": [], "settings": {"target": -5}}
    case.path.write_text(json.dumps(data))
    with pytest.raises(BloodcellInputError, match="target"):
        Case.open(case.project, "patient 7")


def test_states_queue_and_sign_off(tmp_path):
    case = _case(tmp_path)
    assert [s.state for s in case.status()] == ["not started"] * 3
    _fill(case, [[0, 1, 3], [0, 0, 4], [2, 3, 3]], [[0.9, 0.2, 0.95], [0.8, 0.9, 0.99], [0.4, 0.97, 0.5]])
    loaded = case.tables()
    queue = case_queue([(f.key, t) for f, t, _ in loaded])
    assert [c for _, _, c in queue] == sorted(c for _, _, c in queue)
    assert (queue[0][0], queue[0][2]) == (case.fields[0].key, pytest.approx(0.2))  # least certain of the case
    assert queue[1][0] == case.fields[2].key  # then the next one, in another field
    assert len(queue) == 9
    assert any("uncertain" in r for r in case.blocking(loaded))
    with pytest.raises(BloodcellInputError, match="cannot sign the case"):
        case.sign("ann")
    for f, t, image in loaded:  # review every uncertain cell, sign every field
        t.set_review(t.blocking_signoff(), "accepted", "ann")
        t.sign("ann")
        case.project.save(f.key, t, image)
    assert [s.state for s in case.status()] == ["done"] * 3
    signed = case.sign("ann")
    assert signed["by"] == "ann" and case.signature_valid()
    assert Case.open(case.project, "patient 7").signature_valid()
    f, t, image = case.tables()[1]  # a later change to any field voids the case's signature
    t.set_class([int(t.ids[0])], "monocyte", "bob")
    case.project.save(f.key, t, image)
    assert not case.signature_valid()
    assert case.status()[1].state == "in review"


def test_case_differential_target_absolute_flags_and_grades(tmp_path):
    case = _case(tmp_path, 2)
    _fill(case, [[0] * 6 + [1] * 3 + [3] * 8 + [4] * 2, [0] * 5 + [2] * 6 + [3] * 10 + [5]],
          [[0.9] * 19, [0.9] * 22])
    f, t, image = case.tables()[1]
    t.set_review([int(t.ids[0])], "not_classed", "ann")  # a smudge: reported apart, not in the denominator
    case.project.save(f.key, t, image)
    case.settings = CaseSettings(target=100, wbc_per_litre=8e9)
    stats = case_statistics(case)
    rows = {r.name: r for r in stats.white}
    assert list(rows) == ["neutrophil", "lymphocyte", "monocyte"]
    assert stats.white_total == 19 and stats.remaining == 81 and stats.not_classed == 1
    assert rows["neutrophil"].count == 10 and rows["neutrophil"].percent == pytest.approx(100 * 10 / 19)
    assert (rows["monocyte"].low, rows["monocyte"].high) == pytest.approx(exact_interval(6, 19))
    assert rows["monocyte"].per_litre == pytest.approx(8e9 * 6 / 19)
    assert rows["monocyte"].flag == "high" and rows["neutrophil"].flag is None  # 31.6% > 10%; 52.6% in 40-75
    assert stats.red_total == 20 and stats.other == {"Platelets": 1}
    sph = next(g for g in stats.red if g.name == "spherocyte")
    assert sph.count == 2 and sph.percent == pytest.approx(10.0) and sph.grade == "1+"
    assert stats.models == ["model-v3"]
    case.settings.target = 200
    assert case_statistics(case).remaining == 181


def test_agreement_uses_the_models_first_class(tmp_path):
    t = AnnotationTable(CLASSES)
    ids = t.add(np.tile([1.0, 1, 9, 9], (5, 1)), [0, 0, 0, 1, 1], "model-v3", scores=[0.9] * 5, review="unreviewed")
    t.set_review(ids[:2], "accepted", "ann")
    t.set_class([ids[2]], "monocyte", "ann")
    t.set_class([ids[2]], "lymphocyte", "ann")  # a second change keeps the model's first answer
    t.set_class([ids[3]], "lymphocyte", "ann")
    stats = case_stats([t])
    rows = {a.name: a for a in stats.agreement}
    assert t.object_info(int(ids[2]))["attributes"]["model_class"] == "neutrophil"
    assert (rows["neutrophil"].reviewed, rows["neutrophil"].agreed) == (3, 2)
    assert (rows["lymphocyte"].reviewed, rows["lymphocyte"].agreed) == (1, 1)  # ids[4] is still unreviewed
    assert stats.agreement_total.reviewed == 4 and stats.agreement_total.percent == pytest.approx(75.0)
    assert stats.agreement_total.name == "white cells"  # red cells do not swamp the pre-classifier figure
    t.undo()
    t.undo()
    t.undo()
    assert "model_class" not in t.object_info(int(ids[2]))["attributes"]  # undo takes the record back too


def test_grading_thresholds_and_lab_tables(tmp_path):
    table = default_grading()
    assert [table.grade("spherocyte", p) for p in (0, 4.9, 5, 20.9, 21, 50.9, 51, 100)] == \
        ["normal", "normal", "1+", "1+", "2+", "2+", "3+", "3+"]
    assert table.grade("Echinocyte", 30) == "2+" and canonical("Dacrocyte") == "teardrop"
    assert table.grade("normal", 90) is None
    assert all(is_red_cell_class(c) for c in ("RBC", "Red blood cell", "target cell", "Spherocyte"))
    assert not any(is_red_cell_class(c) for c in ("WBC", "neutrophil", "Platelets"))
    lab = tmp_path / "grading.json"
    lab.write_text(json.dumps({"source": "our lab 2026", "thresholds": {"spherocyte": [2, 10, 30]}}))
    mine = load_grading(lab)
    assert mine.grade("spherocyte", 12) == "2+" and mine.grade("target cell", 12) == "1+" and mine.source == "our lab 2026"
    for bad in ({"thresholds": {"spherocyte": [30, 10, 2]}}, {"thresholds": {"x": [1, 2]}}, [1],
                {"thresholds": {"spherocyte": [1, 2, float("nan")]}}):
        lab.write_text(json.dumps(bad))
        with pytest.raises(BloodcellInputError):
            load_grading(lab)


def test_reference_ranges_match_class_names():
    assert reference_for("Neutrophils", None) == (40, 75)
    assert reference_for("neutrophil (segmented)", None) == (40, 75)
    assert reference_for("lymphocyte", {"lymphocyte": [10, 20]}) == (10, 20)
    assert reference_for("blast", None) is None


def test_chula_fields_make_a_case_with_grades(tmp_path, shared_data):
    from napari_bloodcell.core.io.points import read_points

    chula = shared_data / "chula_rbc12"
    if not chula.is_dir():
        pytest.skip("chula_rbc12 is not present")
    images = sorted((chula / "Dataset").glob("*.jpg"))[:3]
    points = read_points(chula / "Label")
    case = Case.create(ReviewProject(tmp_path / "p"), "chula")
    case.add_images(images, points=points)
    loaded = case.tables()
    expected = sum(len(points.by_stem()[p.stem]) for p in images)
    assert sum(len(t) for _, t, _ in loaded) == expected
    for _, t, image in loaded:  # every cell keeps its point, inside its grown box
        pts = np.asarray([a["point"] for a in t.col("attributes")])
        b = t.col("box")
        assert np.all((b[:, 0] <= pts[:, 0]) & (pts[:, 0] <= b[:, 2]) & (b[:, 1] <= pts[:, 1]) & (pts[:, 1] <= b[:, 3]))
    stats = case_statistics(case, loaded)
    assert stats.red_total == expected and stats.white_total == 0
    assert sum(g.count for g in stats.red) <= expected
