"""The review loop from the command line: review import/status, differential, export, retrain, models."""

from __future__ import annotations

import json

from napari_bloodcell.cli.main import main
from napari_bloodcell.core.io.dataset import read_manifest
from napari_bloodcell.core.models.registry import ModelRegistry


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_detect_review_export_retrain_models(capsys, sample_data, tmp_path, monkeypatch):
    monkeypatch.setenv("BLOODCELL_HOME", str(tmp_path / "home"))
    project, dataset, registry = tmp_path / "review", tmp_path / "dataset", tmp_path / "registry"
    pred = tmp_path / "pred.json"
    assert run(capsys, "detect", sample_data / "smear", "--out", pred, "--score", "0.05")[0] == 0
    code, out, _ = run(capsys, "review", "import", pred, "--project", project)
    assert code == 0 and "2 image(s) ready for review" in out
    code, out, _ = run(capsys, "review", "status", "--project", project, "--json")
    status = json.loads(out)
    assert len(status) == 2 and all(s["unreviewed"] == s["cells"] and s["signed_by"] is None for s in status)

    code, out, _ = run(capsys, "differential", project, "--json", "--out", tmp_path / "diff.csv")
    diff = json.loads(out)
    # a white-cell differential: the detector's white cells are counted, red cells and platelets apart
    assert code == 0 and diff["unreviewed"] == diff["total"] and [c["name"] for c in diff["classes"]] == ["WBC"]
    assert diff["total"] + sum(diff["counted_apart"].values()) == sum(s["cells"] for s in status)
    assert (tmp_path / "diff.csv").read_text().startswith("class,count,percent,95% low,95% high,unreviewed")
    code, _, err = run(capsys, "differential", project, "--out", tmp_path / "diff.csv")
    assert code == 2 and "already exists" in err

    # unreviewed model boxes are not ground truth: without --include-unreviewed the dataset has no boxes
    code, out, err = run(capsys, "export", project, "--dataset", dataset, "--by", "cli", "--view", "yolo")
    assert code == 0 and "0 box(es)" in out and "unreviewed model box(es) left out" in err
    code, out, _ = run(capsys, "export", project, "--dataset", dataset, "--by", "cli", "--include-unreviewed")
    assert code == 0 and "version 2" in out and "replaced 2" in out
    assert read_manifest(dataset)["versions"][1]["include_unreviewed"] is True
    assert (dataset / "versions" / "v0001" / "yolo" / "data.yaml").is_file()

    code, out, _ = run(capsys, "retrain", "--dataset", dataset, "--registry", registry, "--epochs", "1",
                       "--max-iters", "1", "--arch", "ssdlite320_mobilenet_v3_large", "--quiet")
    done = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and done["version"] == "v0001" and done["activated"] and done["reason"] == "first detector"
    v1 = ModelRegistry(registry).get("v0001")
    code, out, _ = run(capsys, "models", "add", registry / v1["file"], "--registry", registry)
    assert code == 0 and "v0002 registered; active detector: v0001" in out
    assert run(capsys, "models", "activate", "v0002", "--registry", registry)[0] == 0
    code, out, _ = run(capsys, "models", "rollback", "--registry", registry)
    assert code == 0 and "active detector: v0001" in out
    code, out, _ = run(capsys, "models", "list", "--registry", registry)
    assert out.splitlines()[0].startswith("* v0001") and "ssdlite320" in out
    code, _, err = run(capsys, "models", "activate", "v0009", "--registry", registry)
    assert code == 2 and "no model version 'v0009'" in err


def test_bad_input_is_one_line(capsys, tmp_path):
    (tmp_path / "notes").mkdir()
    code, _, err = run(capsys, "export", tmp_path / "notes", "--dataset", tmp_path / "ds")
    assert code == 2 and "not a review project" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "retrain", "--dataset", tmp_path / "notes", "--registry", tmp_path / "reg")
    assert code == 2 and "not a napari-bloodcell dataset" in err
    code, _, err = run(capsys, "retrain", "--dataset", tmp_path / "notes", "--arch", "yolo5")
    assert code == 2 and "unknown architecture 'yolo5'" in err
    code, _, err = run(capsys, "models", "add", "--registry", tmp_path / "reg")
    assert code == 2 and "needs a checkpoint file" in err
    code, _, err = run(capsys, "review", "import", "--project", tmp_path / "p")
    assert code == 2 and "needs the predictions file" in err
