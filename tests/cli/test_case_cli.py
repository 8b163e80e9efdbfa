"""A case from the command line: new, status, queue, cell review, sign, differential, report; points verbs."""

from __future__ import annotations

import json
import shutil

import pytest

from napari_bloodcell.cli.main import main


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _as_predictions(sample_data, tmp_path):
    """The sample's boxes as a model's output: unreviewed, with confidences, some of them uncertain."""
    coco = json.loads((sample_data / "smear" / "annotations.json").read_text())
    for k, a in enumerate(coco["annotations"]):
        a["score"] = [0.3, 0.95, 0.7, 0.99, 0.5][k % 5]
        a["attributes"] = {"source": "model-7", "review": "unreviewed"}
    out = tmp_path / "pred.json"
    out.write_text(json.dumps(coco))
    return out


def test_case_end_to_end(capsys, sample_data, tmp_path):
    project = tmp_path / "project"
    fields = sample_data / "smear" / "JPEGImages"
    code, out, err = run(capsys, "case", "new", "slide 1", fields, "--project", project, "--reviewer", "ann",
                         "--annotations", _as_predictions(sample_data, tmp_path), "--wbc", "6.5")
    assert code == 0, err
    code, out, _ = run(capsys, "case", "status", "slide 1", "--project", project, "--json")
    status = json.loads(out)
    assert len(status["fields"]) == 2 and status["signed"] is None
    assert all(f["state"] == "not started" and f["cells"] == f["unreviewed"] > 0 for f in status["fields"])

    code, out, _ = run(capsys, "case", "queue", "slide 1", "--project", project, "-n", "3", "--json")
    queue = json.loads(out)
    assert len(queue) == 3 and queue[0]["certainty"] <= queue[1]["certainty"] <= queue[2]["certainty"]
    first = queue[0]
    assert run(capsys, "case", "cell", "slide 1", "--project", project, "--field", first["field"],
               "--id", first["id"], "--class", "Lymphocyte", "--reviewer", "ann")[0] == 0
    code, out, _ = run(capsys, "case", "status", "slide 1", "--project", project, "--json")
    assert json.loads(out)["fields"][[f["key"] for f in json.loads(out)["fields"]].index(first["field"])]["state"] \
        == "in review"

    code, out, _ = run(capsys, "case", "differential", "slide 1", "--project", project, "--json")
    diff = json.loads(out)
    assert diff["target"] == 100 and diff["remaining"] == 100 - diff["white_total"]
    assert [r["name"] for r in diff["white"]] == ["Neutrophil", "Eosinophil", "Lymphocyte", "Monocyte"]
    assert sum(r["per_litre"] for r in diff["white"]) == pytest.approx(6.5e9)
    assert diff["red_total"] > 0 and diff["other"] == {"Platelets": pytest.approx(diff["other"]["Platelets"])}

    code, _, err = run(capsys, "case", "sign", "slide 1", "--project", project, "--reviewer", "ann")
    assert code == 2 and "cannot sign the case" in err
    code, out, _ = run(capsys, "case", "queue", "slide 1", "--project", project, "-n", "1000", "--json")
    for cell in json.loads(out):
        if cell["certainty"] < 0.6:
            run(capsys, "case", "cell", "slide 1", "--project", project, "--field", cell["field"], "--id", cell["id"],
                "--state", "accepted")
    assert run(capsys, "case", "sign", "slide 1", "--project", project, "--reviewer", "ann", "--fields")[0] == 0
    code, out, _ = run(capsys, "case", "list", "--project", project, "--json")
    assert json.loads(out) == [{"case": "slide 1", "fields": 2, "done": 2, "signed": True}]

    code, out, err = run(capsys, "case", "report", "slide 1", "--project", project, "--out", tmp_path / "r.pdf")
    assert code == 0, err
    assert (tmp_path / "r.pdf").read_bytes()[:5] == b"%PDF-" and (tmp_path / "r.html").is_file()
    code, _, err = run(capsys, "case", "report", "slide 1", "--project", project, "--out", tmp_path / "r.pdf")
    assert code == 2 and "r.pdf" in err  # never written over


def test_bad_case_input_is_one_line(capsys, sample_data, tmp_path):
    project = tmp_path / "project"
    fields = sample_data / "smear" / "JPEGImages"
    for args, problem in [
        (("case", "new", "../escape", fields, "--project", project), "not allowed"),
        (("case", "status", "nothing", "--project", project), "is not a review project"),
        (("case", "new", "ok", tmp_path / "missing.png", "--project", project), "not a readable image"),
        (("points", "convert", tmp_path / "none.txt", "--out", tmp_path / "o.csv"), "no such file"),
    ]:
        code, out, err = run(capsys, *args)
        assert code == 2 and problem in err and len(err.strip().splitlines()) == 1, (args, err)
    bad = tmp_path / "bad.json"
    bad.write_text('{"thresholds": {"spherocyte": [50, 10, 2]}}')
    assert run(capsys, "case", "new", "ok", fields, "--project", project, "--grading", bad)[0] == 2
    assert not (project / "cases" / "ok.json").exists()


def test_points_verbs_on_real_chula_fields(capsys, shared_data, tmp_path):
    chula = shared_data / "chula_rbc12"
    if not chula.is_dir():
        pytest.skip("chula_rbc12 is not present")
    labels = tmp_path / "Label"
    labels.mkdir()
    for stem in ("10", "101"):
        shutil.copy(chula / "Label" / f"{stem}.txt", labels)
    code, out, err = run(capsys, "points", "cells", labels, "--images", chula / "Dataset", "--out", tmp_path / "c.json",
                         "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["cells"] == report["points"] > 150 and report["grown"] >= 0.8 * report["points"]
    coco = json.loads((tmp_path / "c.json").read_text())
    assert len(coco["annotations"]) == report["cells"] and len(coco["categories"]) == 13
    code, out, _ = run(capsys, "points", "convert", labels, "--images", chula / "Dataset", "--out", tmp_path / "p.csv")
    assert code == 0 and (tmp_path / "p.csv").read_text().count("\n") == report["points"] + 1
