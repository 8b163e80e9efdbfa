"""``bloodcell train segmenter``, ``segment``, ``evaluate segmentation``, ``export --volume`` and
``retrain --task segmenter``: the 3D loop from the command line, on small synthetic volumes."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_bloodcell.cli.main import main
from napari_bloodcell.core.io.nifti import load_nifti, save_nifti
from napari_bloodcell.core.models.registry import ModelRegistry

from ..core.volumes import TINY, write_cases


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return write_cases(tmp_path_factory.mktemp("cases"), 4)


def test_train_segment_evaluate_round_trip(cases, tmp_path, capsys, dask_scheduler):
    model = tmp_path / "seg.pt"
    code, out, err = run(capsys, "train", "segmenter", cases, "--out", model, "--iterations", 6, "--val-every", 3,
                         "--patch", 16, "--val-patch", "32,32,32", "--arch-args", json.dumps(TINY), "--device", "cpu",
                         "--json", "--quiet")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["out"] == str(model) and summary["iterations_run"] == 6 and summary["n_val"] >= 1
    assert set(summary["best"]["dice"]) == {"ball", "box"}
    code, out, err = run(capsys, "segment", cases, "--model", model, "--out", tmp_path / "pred", "--patch", 16,
                         "--overlap", 0.25, "--device", "cpu", "--json")
    assert code == 0, err
    results = json.loads(out)
    assert len(results) == 4 and all(r["windows"] > 1 for r in results)
    first = nib.load(results[0]["output"])
    source = nib.load(str(cases / "imagesTr" / "case_001.nii.gz"))
    assert first.shape == source.shape and np.allclose(first.affine, source.affine)
    # on a Dask cluster: the same label maps, written here as each case finishes
    code, out, err = run(capsys, "segment", cases, "--model", model, "--out", tmp_path / "pred_cluster", "--patch",
                         16, "--overlap", 0.25, "--device", "cpu", "--json", "--scheduler", dask_scheduler)
    assert code == 0, err
    for r, c in zip(results, json.loads(out)):
        assert r["case"] == c["case"]
        assert (np.asarray(nib.load(r["output"]).dataobj) == np.asarray(nib.load(c["output"]).dataobj)).all()
    assert sorted(p.name for p in (tmp_path / "pred_cluster").iterdir()) == sorted(
        f"{r['case']}_seg.nii.gz" for r in results)
    code, out, err = run(capsys, "segment", cases / "imagesTr" / "case_002.nii.gz", "--model", model, "--out",
                         tmp_path / "largest", "--patch", 16, "--device", "cpu", "--largest-component", "--quiet")
    assert code == 0, err
    from scipy import ndimage

    kept = np.asarray(nib.load(str(tmp_path / "largest" / "case_002_seg.nii.gz")).dataobj)
    assert all(ndimage.label(kept == v, structure=np.ones((3, 3, 3)))[1] <= 1 for v in (1, 2))
    code, out, err = run(capsys, "evaluate", "segmentation", "--pred", tmp_path / "pred", "--gt", cases, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["cases"] == 4 and set(report["labels"]) <= {"ball", "box"}
    for m in report["labels"].values():
        assert 0.0 <= m["dice_mean"] <= 1.0
    code, out, err = run(capsys, "evaluate", "segmentation", "--model", model, "--gt", cases, "--split", "val",
                         "--patch", 16, "--device", "cpu")
    assert code == 0, err
    assert "mean Dice over labels" in out and "HD95" in out
    # a perfect prediction scores Dice 1 and HD95 0
    perfect = tmp_path / "perfect"
    for lab in sorted((cases / "labelsTr").iterdir()):
        (perfect / lab.name).parent.mkdir(exist_ok=True)
        (perfect / lab.name).write_bytes(lab.read_bytes())
    code, out, _ = run(capsys, "evaluate", "segmentation", "--pred", perfect, "--gt", cases, "--json")
    report = json.loads(out)
    assert report["mean_dice"] == 1.0 and all(m["hd95_mean"] == 0.0 for m in report["labels"].values())


def test_errors_are_one_line(cases, tmp_path, capsys):
    code, _, err = run(capsys, "train", "segmenter", tmp_path / "nowhere", "--out", tmp_path / "m.pt")
    assert code == 2 and "no such folder" in err
    code, _, err = run(capsys, "train", "segmenter", cases, "--out", tmp_path / "m.pt", "--patch", "16,16")
    assert code == 2 and "patch must be N or X,Y,Z" in err
    code, _, err = run(capsys, "train", "segmenter", cases, "--out", tmp_path / "m.pt", "--freeze", "conv_9",
                       "--arch-args", json.dumps(TINY), "--iterations", 1)
    assert code == 2 and "freezable stages" in err
    code, _, err = run(capsys, "segment", cases, "--model", tmp_path / "missing.pt", "--out", tmp_path / "o")
    assert code == 2 and "no such checkpoint" in err
    code, _, err = run(capsys, "evaluate", "segmentation", "--gt", cases)
    assert code == 2 and "either --pred" in err


def test_export_corrections_then_retrain_and_compare_with_the_parent(cases, tmp_path, capsys):
    dataset, registry = tmp_path / "dataset", tmp_path / "registry"
    pairs = []
    for img in sorted((cases / "imagesTr").iterdir()):
        pairs += ["--volume", img, cases / "labelsTr" / img.name]
    code, out, err = run(capsys, "export", *pairs[:9], "--dataset", dataset, "--by", "tester", "--quiet")
    assert code == 0, err
    assert "version 1: 3 case(s); added 3" in out
    # a corrected label map for case_001: the box removed; exported as version 2, version 1 stays as it was
    lab = load_nifti(cases / "labelsTr" / "case_001.nii.gz")
    fixed = tmp_path / "case_001_fixed.nii.gz"
    save_nifti(np.where(lab.data == 2, 0, lab.data), lab.affine, fixed, is_label_map=True)
    code, out, err = run(capsys, "export", "--volume", cases / "imagesTr" / "case_001.nii.gz", fixed,
                         *pairs[9:], "--dataset", dataset, "--by", "tester", "--quiet")
    assert code == 0, err
    assert "version 2: 4 case(s); added 1, replaced 1" in out
    v1 = load_nifti(dataset / "versions" / "v0001" / "labelsTr" / "case_001.nii.gz")
    v2 = load_nifti(dataset / "versions" / "v0002" / "labelsTr" / "case_001.nii.gz")
    assert (v1.data == 2).any() and not (v2.data == 2).any() and np.allclose(v2.affine, lab.affine)
    manifest = json.loads((dataset / "dataset.json").read_text())
    assert manifest["kind"] == "segmentation" and manifest["current"] == 2
    common = ["retrain", "--task", "segmenter", "--dataset", dataset, "--registry", registry, "--epochs", 1,
              "--max-iters", 3, "--patch", 16, "--device", "cpu", "--by", "tester", "--jsonl"]
    code, out, err = run(capsys, *common)
    assert code == 0, err
    done = json.loads(out.strip().splitlines()[-1])["result"]
    assert done["version"] == "v0001" and done["activated"] and done["reason"] == "first segmenter"
    code, out, err = run(capsys, *common, "--freeze", "conv_0,res_1", "--activate", "always")
    assert code == 0, err
    lines = [json.loads(line) for line in out.strip().splitlines()]
    assert any(item.get("progress", {}).get("kind") == "train" and item["progress"]["total"] == 3 for item in lines)
    done = lines[-1]["result"]
    assert done["parent"] == "v0001" and done["parent_mean_dice"] is not None and "mean Dice" in done["reason"]
    entry = ModelRegistry(registry).active("segmenter")
    assert entry["id"] == "v0002" and entry["frozen"] == ["conv_0", "res_1"]
    code, _, err = run(capsys, "retrain", "--dataset", dataset, "--registry", registry, "--by", "t")
    assert code == 2 and "segmentation dataset" in err
    code, out, _ = run(capsys, "models", "list", "--registry", registry)
    assert "* v0002  segmenter" in out and "mean_dice" in out
    code, out, err = run(capsys, "models", "add", tmp_path / "registry" / "models" / "v0001.pt", "--task",
                         "segmenter", "--registry", tmp_path / "other", "--by", "t")
    assert code == 0, err
    added = ModelRegistry(tmp_path / "other").versions("segmenter")[0]
    assert "mean_dice" in added["metrics"] and any(k.startswith("dice_") for k in added["metrics"])
