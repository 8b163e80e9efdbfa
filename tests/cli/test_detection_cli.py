"""``bloodcell detect``, ``train detector`` and ``evaluate detection``: outputs, the --json contract, bad input."""

from __future__ import annotations

import json
import time
import types

import pytest

from napari_bloodcell.cli.main import main
from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.io.formats import read_annotations


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_detect_then_evaluate(capsys, sample_data, tmp_path):
    pred = tmp_path / "pred.json"
    code, out, _ = run(capsys, "detect", sample_data / "smear", "--out", pred, "--score", "0.05", "--model",
                       "classical")
    assert code == 0 and "ms/image with classical" in out
    data = json.loads(pred.read_text())
    assert {c["name"] for c in data["categories"]} == {"WBC", "RBC", "Platelets"}
    assert data["annotations"] and all("score" in a for a in data["annotations"])
    assert {a["attributes"]["review"] for a in data["annotations"]} == {"unreviewed"}
    assert read_annotations(pred).images[0].path is not None  # absolute image paths: re-openable anywhere

    code, out, _ = run(capsys, "evaluate", "detection", "--pred", pred, "--gt", sample_data / "smear", "--json")
    assert code == 0 and len(out.strip().splitlines()) == 1
    report = json.loads(out)
    assert set(report) == {"mAP50", "mAP", "per_class"}
    assert set(report["per_class"]["RBC"]) == {"AP50", "n_gt", "n_pred"}
    assert report["per_class"]["RBC"]["n_gt"] == read_annotations(sample_data / "smear").class_counts()["RBC"]

    plots = tmp_path / "plots"
    code, out, _ = run(capsys, "evaluate", "detection", "--pred", pred, "--gt", sample_data / "smear",
                       "--plots", plots)
    assert code == 0 and "COCO mAP@[.5:.95]" in out and (plots / "pr_RBC.png").is_file()
    assert (plots / "confusion_matrix.png").is_file()

    code, _, err = run(capsys, "detect", sample_data / "smear", "--out", pred)
    assert code == 2 and "refusing to overwrite" in err


def test_detect_by_default_uses_the_active_then_the_bundled_model_and_says_which(capsys, sample_data, tmp_path,
                                                                                 monkeypatch):
    from napari_bloodcell.core.models.bundled import bundled_for

    monkeypatch.setenv("BLOODCELL_HOME", str(tmp_path / "home"))  # an empty registry
    code, out, err = run(capsys, "detect", sample_data / "smear", "--out", tmp_path / "p.json")
    shipped = bundled_for("detector")
    assert code == 0
    if shipped is not None:
        assert f"detecting with bundled {shipped.name}" in err and "yolov3_tiny" in out
        code, out, _ = run(capsys, "models", "list")
        assert code == 0 and "v0000" in out and "bundled" in out
    else:
        assert "detecting with the classical detector" in err


def test_morphology_types_the_red_cells_of_the_sample(capsys, sample_data, tmp_path):
    from napari_bloodcell.core.io.points import read_points
    from napari_bloodcell.core.models.bundled import bundled_for

    if bundled_for("morphology") is None:
        pytest.skip("no bundled morphology model in this tree")
    out_file = tmp_path / "typed.csv"
    code, out, _ = run(capsys, "morphology", sample_data / "smear", "--detector", "classical", "--out", out_file,
                       "--json")
    summary = json.loads(out)
    assert code == 0 and summary["cells"] > 20 and summary["images"] == 2
    pset = read_points(out_file, images=sample_data / "smear")
    assert pset.n_points == summary["cells"] and set(pset.classes) <= set(bundled_for("morphology").classes)
    code, _, err = run(capsys, "morphology", sample_data / "smear", "--out", out_file)
    assert code == 2 and "refusing to overwrite" in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    code, _, err = run(capsys, "morphology", sample_data / "smear", "--model", bad, "--out", tmp_path / "x.csv")
    assert code == 2 and "bad.pt" in err and "Traceback" not in err


def test_detect_bad_inputs(capsys, sample_data, tmp_path):
    code, _, err = run(capsys, "detect", tmp_path / "nope.png", "--out", tmp_path / "p.json")
    assert code == 2 and "no such file" in err
    code, _, err = run(capsys, "detect", sample_data / "smear", "--model", "yolov3", "--out", tmp_path / "p.json")
    assert code == 2 and "no trained weights" in err
    code, _, err = run(capsys, "detect", sample_data / "smear", "--device", "cuda:7", "--model",
                       sample_data / "smear" / "classes.txt", "--out", tmp_path / "p.json")
    assert code == 2 and "error" in err
    assert not (tmp_path / "p.json").exists()


def test_train_detector_verb(capsys, sample_data, tmp_path):
    data = sample_data / "smear" / "annotations.json"
    out = tmp_path / "m.pt"
    code, stdout, _ = run(capsys, "train", "detector", "--data", data, "--val", data, "--arch",
                          "ssdlite320_mobilenet_v3_large", "--epochs", "1", "--max-iters", "1", "--batch", "2",
                          "--out", out, "--quiet")
    assert code == 0 and out.is_file()
    summary = json.loads(stdout)
    assert summary["initial_weights"] == "none" and summary["n_train"] == 2
    code, stdout, _ = run(capsys, "detect", sample_data / "smear", "--model", out, "--score", "0.0",
                          "--out", tmp_path / "p.json")
    assert code == 0 and "ssdlite320_mobilenet_v3_large:m@" in stdout
    code, _, err = run(capsys, "train", "detector", "--data", data, "--arch", "ssd300_vgg16", "--arch-arg",
                       "s_min", "--out", tmp_path / "x.pt")
    assert code == 2 and "KEY=VALUE" in err


def test_unreachable_pretrained_weights_fail_fast_with_instructions(monkeypatch):
    from napari_bloodcell.core.models import weights

    fake = types.SimpleNamespace(url="http://127.0.0.1:9/resnet50-unreachable.pth")
    fake.__str__ = lambda self: "ResNet50_Weights.FAKE"
    monkeypatch.setattr(weights, "_enum", lambda name: fake)
    t0 = time.perf_counter()
    with pytest.raises(BloodcellInputError, match="could not be downloaded.*put it at .*resnet50-unreachable.pth"):
        weights.backbone_weights_for(types.SimpleNamespace(name="x", imagenet_weights="R", coco_weights=None),
                                     "imagenet")
    assert time.perf_counter() - t0 < 10
    with pytest.warns(UserWarning, match="starting from random weights"):
        resolved = weights.backbone_weights_for(
            types.SimpleNamespace(name="x", imagenet_weights="R", coco_weights="C"), "auto")
    assert resolved == (None, "none")
