"""Label names beside a NIfTI label map (MSD dataset.json, ITK-SNAP/plain LABELS.txt, labels.json, intent name),
read as untrusted input, and the anatomical axis labels read off the affine."""

import json
import os

import nibabel as nib
import numpy as np
import pytest

from napari_bloodcell.core.info import describe
from napari_bloodcell.core.io.label_names import MAX_NAMES, find_label_names
from napari_bloodcell.core.io.nifti import direction_labels, load_nifti, save_nifti

ITK_SNAP = """################################################
# ITK-SnAP Label Description File
# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL
################################################
    0     0    0    0        0  0  0    "Clear Label"
    1   255    0    0        1  1  1    "Anterior"
    2     0  255    0      0.5  1  1    "Posterior body"
"""


def label_map(folder, name="case_001.nii.gz", values=(0, 1, 2)):
    folder.mkdir(parents=True, exist_ok=True)
    data = np.zeros((4, 4, 4), np.uint8)
    for k, v in enumerate(values):
        data[k] = v
    return save_nifti(data, np.eye(4), folder / name, is_label_map=True)


def test_msd_dataset_json_above_labels_tr(tmp_path):
    path = label_map(tmp_path / "Task04" / "labelsTr")
    (tmp_path / "Task04" / "dataset.json").write_text(json.dumps(
        {"name": "Hippocampus", "labels": {"0": "background", "1": "Anterior", "2": "Posterior"}}))
    found = find_label_names(path)
    assert found.names == {0: "background", 1: "Anterior", 2: "Posterior"}
    assert found.source == str(tmp_path / "Task04" / "dataset.json") and not found.warnings


def test_nnunet_v2_labels_and_regions(tmp_path):
    path = label_map(tmp_path / "labelsTr")
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"labels": {"background": 0, "edema": 1, "tumour": 2, "whole tumour": [1, 2]}}))
    assert find_label_names(path).names == {0: "background", 1: "edema", 2: "tumour"}


def test_itk_snap_names_and_colours(tmp_path):
    path = label_map(tmp_path / "labelsTr")
    (tmp_path / "LABELS.txt").write_text(ITK_SNAP)
    found = find_label_names(path)
    assert found.names == {0: "Clear Label", 1: "Anterior", 2: "Posterior body"}
    assert found.colours[1] == (1.0, 0.0, 0.0, 1.0) and found.colours[2] == (0.0, 1.0, 0.0, 0.5)


@pytest.mark.parametrize("text, names", [
    ("0 background\n1 Anterior (hippocampus head)\n", {0: "background", 1: "Anterior (hippocampus head)"}),
    ("# comment\n1: left\n2,right\n3 = \"third one\"\nnot a line\n", {1: "left", 2: "right", 3: "third one"}),
    ("17  Left-Hippocampus  220 216 20 0\n", {17: "Left-Hippocampus"}),  # FreeSurfer colour table
])
def test_plain_and_freesurfer_lines(tmp_path, text, names):
    path = label_map(tmp_path)
    (tmp_path / "labels.txt").write_text(text)
    found = find_label_names(path)
    assert found.names == names
    if 17 in names:
        assert found.colours[17] == pytest.approx((220 / 255, 216 / 255, 20 / 255, 1.0))


def test_our_labels_json_and_the_nearest_folder_wins(tmp_path):
    path = label_map(tmp_path / "versions" / "v0001" / "labelsTr")
    (tmp_path / "versions" / "v0001" / "labels.json").write_text(json.dumps({"1": "left hippocampus"}))
    (tmp_path / "versions" / "dataset.json").write_text(json.dumps({"labels": {"1": "older name"}}))
    found = find_label_names(path)
    assert found.names == {1: "left hippocampus"} and found.name_of(2) == "label 2" and found.name_of(0) == "background"
    # within one folder: dataset.json, then LABELS.txt, then labels.json
    (tmp_path / "versions" / "v0001" / "LABELS.txt").write_text("1 from LABELS.txt\n")
    assert find_label_names(path).names == {1: "from LABELS.txt"}


def test_intent_name_names_a_binary_mask_only(tmp_path):
    img = nib.Nifti1Image(np.eye(4, dtype=np.uint8).reshape(4, 4, 1).repeat(2, axis=2), np.eye(4))
    img.header.set_intent("label", name="Hippocampus")
    nib.save(img, tmp_path / "mask.nii.gz")
    vol = load_nifti(tmp_path / "mask.nii.gz")
    assert vol.intent_name == "Hippocampus"
    found = find_label_names(vol.path, vol.intent_name, vol.label_values())
    assert found.names == {1: "Hippocampus"} and found.source == "NIfTI intent name"
    assert find_label_names(vol.path, vol.intent_name, [0, 1, 2]).names == {}  # which value would it name?


@pytest.mark.parametrize("name, content, reason", [
    ("labels.json", '{"1": "a\\nb"}', "control character"),
    ("labels.json", '{"x": "a"}', "not an integer"),
    ("labels.json", '{"-1": "a"}', "outside"),
    ("labels.json", '["a", "b"]', "not a mapping"),
    ("labels.json", '{"1": ' + '"' + "a" * 500 + '"}', "longer than"),
    ("labels.json", "[" * 200 + "]" * 200, "nest"),
    ("labels.json", '{"1": NaN}', "NaN is not"),
    ("dataset.json", '{"labels": {"1": true}}', "not text"),
    ("labels.json", json.dumps({str(i): f"n{i}" for i in range(MAX_NAMES + 1)}), "more than"),
    ("LABELS.txt", "1 a\n" + "9" * 5000 + " b\n", "not an integer"),
    ("LABELS.txt", '    1   255 0 0   1.2.3 1 1 "x"\n', "colour"),
    ("LABELS.txt", b"1 caf\xe9\n", "UTF-8"),
])
def test_hostile_names_files_are_skipped_with_a_warning(tmp_path, name, content, reason):
    path = label_map(tmp_path)
    target = tmp_path / name
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    found = find_label_names(path)
    assert found.names == {} and len(found.warnings) == 1
    assert name in found.warnings[0] and reason in found.warnings[0]


def test_oversized_and_special_names_files(tmp_path):
    path = label_map(tmp_path / "a")
    (tmp_path / "a" / "labels.json").write_bytes(b" " * (1024 * 1024 + 1))
    found = find_label_names(path)
    assert found.names == {} and "larger than" in found.warnings[0]
    os.mkfifo(tmp_path / "a" / "LABELS.txt")  # never opened: it would block the reader
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"1": "above"}}))
    assert find_label_names(path).names == {1: "above"}


def test_info_names_the_labels(sample_data):
    d = describe(sample_data / "mri" / "synthetic_t1_000_labels.nii.gz")
    assert d["labels"]["1"]["name"] == "left hippocampus" and d["labels"]["0"]["name"] == "background"
    assert d["label_names_from"].endswith("labels.json")


def test_direction_labels_from_the_affine(tmp_path):
    assert direction_labels(("R", "A", "S")) == ("L→R", "P→A", "I→S")
    assert direction_labels(("L", "P", "S")) == ("R→L", "A→P", "I→S")
    assert direction_labels(("A", "S", "R")) == ("P→A", "I→S", "L→R")
    assert direction_labels(("R", "L", "S")) is None and direction_labels((None, "A", "S")) is None
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])[:, [1, 0, 2, 3]]  # voxel axis 0 runs anterior, axis 1 to the left
    save_nifti(np.zeros((3, 4, 5), np.float32), flipped, tmp_path / "t1.nii.gz")
    assert load_nifti(tmp_path / "t1.nii.gz").axis_labels() == ("P→A", "R→L", "I→S")
    # no sform or qform: the Analyze fallback does not know left from right, so no anatomical labels
    img = nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), None)
    img.header.set_sform(None, code=0)
    img.header.set_qform(None, code=0)
    nib.save(img, tmp_path / "analyze_like.nii")
    vol = load_nifti(tmp_path / "analyze_like.nii")
    assert not vol.oriented and vol.axis_labels() is None
