"""``bloodcell train classifier``, ``classify`` and ``evaluate classification`` from the command line: COCO in,
COCO out, ``--json``, ``--plots``, cross-validation, and clear errors."""

from __future__ import annotations

import json

import pytest

from napari_bloodcell.cli.main import main
from napari_bloodcell.core.io.coco import read_coco

from ..core.cells import disc_crops, wbc_fields

TYPES = "Neutrophil,Eosinophil,Lymphocyte,Monocyte"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    return wbc_fields(tmp_path_factory.mktemp("fields"), n=6)


def test_train_classify_evaluate_round_trip(fields, tmp_path, capsys, dask_scheduler):
    model = tmp_path / "wbc.pt"
    code, out, _ = run(capsys, "train", "classifier", "--data", fields, "--classes", TYPES, "--box-class", "WBC",
                       "--arch", "googlenet", "--input-size", 64, "--epochs", 2, "--batch", 8, "--optimizer", "adam",
                       "--lr", "1e-3", "--out", model, "--report", tmp_path / "report", "--json", "--quiet")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["out"] == str(model) and summary["n_val"] > 0 and "accuracy" in summary["summary"]
    assert {p.name for p in (tmp_path / "report").iterdir()} >= {"report.json", "confusion_normalised.png",
                                                                  "roc.png"}
    pred_file = tmp_path / "typed.json"
    code, out, _ = run(capsys, "classify", "--model", model, "--boxes", fields, "--target", "Neutrophil",
                       "--out", pred_file, "--json", "--quiet")
    assert code == 0
    info = json.loads(out)
    assert info["cells"] == 6 and info["target"] == "Neutrophil"  # one neutrophil box per field
    typed = read_coco(pred_file)
    assert sum(typed.class_counts()[c] for c in TYPES.split(",")) >= 6
    # the same on a Dask cluster: same classes and the same type for every cell
    code, out, err = run(capsys, "classify", "--model", model, "--boxes", fields, "--target", "Neutrophil",
                         "--out", tmp_path / "typed_cluster.json", "--scheduler", dask_scheduler, "--json", "--quiet")
    assert code == 0, err
    assert json.loads(out)["cells"] == 6
    on_cluster = read_coco(tmp_path / "typed_cluster.json")
    assert on_cluster.classes == typed.classes
    assert [r.labels.tolist() for r in on_cluster.images] == [r.labels.tolist() for r in typed.images]
    plots = tmp_path / "plots"
    code, out, _ = run(capsys, "evaluate", "classification", "--pred", pred_file, "--gt", fields, "--json",
                       "--plots", plots)
    assert code == 0
    report = json.loads(out)
    assert report["n"] == 6 and set(report["per_class"]) == set(TYPES.split(","))
    assert (plots / "confusion_normalised.png").is_file()
    code, out, _ = run(capsys, "evaluate", "classification", "--model", model, "--data", fields)
    assert code == 0 and "accuracy" in out and "Monocyte" in out
    code, _, err = run(capsys, "classify", "--model", model, "--boxes", fields, "--out", pred_file)
    assert code == 2 and "refusing to overwrite" in err


def test_cross_validation_and_svm_from_a_crop_folder(tmp_path, capsys):
    crops = disc_crops(tmp_path / "crops", per_class=6)
    code, out, _ = run(capsys, "train", "classifier", "--data", crops, "--arch", "vgg16", "--svm", "--input-size",
                       32, "--folds", 3, "--report", tmp_path / "cv", "--json", "--quiet")
    assert code == 0
    line = json.loads(out)
    assert line["folds"] == 3 and line["n"] == 18
    report = json.loads((tmp_path / "cv" / "report.json").read_text())
    assert len(report["folds"]) == 3 and report["head"] == "svm" and report["report"]["n"] == 18


def test_whole_image_classification_and_errors(fields, tmp_path, capsys):
    crops = disc_crops(tmp_path / "crops", per_class=6)
    model = tmp_path / "disc.pt"
    assert run(capsys, "train", "classifier", "--data", crops, "--arch", "densenet121", "--input-size", 32,
               "--epochs", 1, "--batch", 6, "--out", model, "--quiet")[0] == 0
    out_file = tmp_path / "whole.json"
    code, out, _ = run(capsys, "classify", *sorted(crops.glob("red/*.png"))[:2], "--model", model, "--out", out_file,
                       "--quiet")
    assert code == 0 and "2 image(s), 2 cell(s)" in out
    code, _, err = run(capsys, "train", "classifier", "--data", crops, "--arch", "densenet121")
    assert code == 2 and "--out is required" in err
    code, _, err = run(capsys, "classify", "--model", model, "--boxes", fields, "--target", "Basophil", "--out",
                       tmp_path / "x.json")
    assert code == 2 and "not in the boxes' classes" in err
