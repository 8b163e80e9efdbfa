"""``bloodcell`` verbs, their output contracts and every bad-input case (one line, exit 2, nothing written)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from napari_bloodcell.cli.main import main
from napari_bloodcell.core.io.formats import read_annotations


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json_for_image_volume_and_annotations(capsys, sample_data):
    code, out, _ = run(capsys, "info", sample_data / "smear" / "JPEGImages" / "smear_0000.png", "--json")
    assert code == 0 and json.loads(out) == {
        "path": str(sample_data / "smear" / "JPEGImages" / "smear_0000.png"),
        "kind": "image", "shape": [480, 640, 3], "dtype": "uint8", "rgb": True}
    code, out, _ = run(capsys, "info", sample_data / "mri" / "synthetic_t1_000.nii.gz", "--json")
    d = json.loads(out)
    assert d["kind"] == "volume" and d["shape"] == [80, 96, 72] and d["orientation"] == "RAS"
    assert d["spacing"] == pytest.approx([2.4, 2.2, 2.6]) and len(d["affine"]) == 4
    assert d["affine"][1][2] != 0  # the rotation is reported
    code, out, _ = run(capsys, "info", sample_data / "mri" / "synthetic_t1_000_labels.nii.gz", "--json")
    assert set(json.loads(out)["labels"]) == {"0", "1", "2"}
    code, out, _ = run(capsys, "info", sample_data / "smear", "--json")
    d = json.loads(out)
    assert d["kind"] == "annotations" and d["format"] == "voc" and d["images"] == 2
    assert sum(d["counts"].values()) == d["boxes"] and d["counts"]["Eosinophil"] >= 1


def test_info_text_output(capsys, sample_data):
    code, out, _ = run(capsys, "info", sample_data / "mri" / "synthetic_t1_000.nii.gz")
    assert code == 0 and "orientation RAS" in out and "spacing (mm) (2.4, 2.2, 2.6)" in out


def test_convert_voc_coco_yolo_voc(capsys, sample_data, tmp_path):
    src = read_annotations(sample_data / "smear")
    current = sample_data / "smear"
    for k, fmt in enumerate(["coco", "yolo", "voc"]):
        out_dir = tmp_path / f"{k}-{fmt}"
        code, out, _ = run(capsys, "convert", current, "--to", fmt, "--out", out_dir)
        assert code == 0 and f"as {fmt}" in out
        current = out_dir
        back = read_annotations(out_dir)
        assert back.classes == src.classes
        for a, b in zip(src.images, back.images):
            assert np.abs(a.boxes - b.boxes).max() <= 1.0
            np.testing.assert_array_equal(a.labels, b.labels)


def test_sample_writes_reproducible_ground_truth(capsys, tmp_path):
    code, out, _ = run(capsys, "sample", "smear", "--out", tmp_path / "a", "--seed", 5, "--count", 2)
    assert code == 0
    run(capsys, "sample", "smear", "--out", tmp_path / "b", "--seed", 5, "--count", 2)
    for name in ("smear_0000.png", "smear_0001.png"):
        assert (tmp_path / "a" / "JPEGImages" / name).read_bytes() == (tmp_path / "b" / "JPEGImages" / name).read_bytes()
    assert (tmp_path / "a" / "annotations.json").read_text() == (tmp_path / "b" / "annotations.json").read_text()
    code, _, _ = run(capsys, "sample", "mri", "--out", tmp_path / "m", "--seed", 1)
    assert code == 0 and (tmp_path / "m" / "synthetic_t1_000_labels.nii.gz").is_file()


def one_line_error(capsys, *args, expect):
    code, out, err = run(capsys, *args)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert expect in err, err
    return err


def test_bad_inputs_give_one_clear_line_and_exit_2(capsys, tmp_path, sample_data):
    one_line_error(capsys, "info", tmp_path / "missing.png", expect="missing.png: no such file")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8 garbage")
    one_line_error(capsys, "info", tmp_path / "corrupt.jpg", expect="corrupt.jpg: cannot read image")
    (tmp_path / "bad.xml").write_text("<annotation><object>")
    one_line_error(capsys, "info", tmp_path / "bad.xml", expect="bad.xml: malformed XML")
    (tmp_path / "bad.json").write_text('{"images": [1,')
    one_line_error(capsys, "convert", tmp_path / "bad.json", "--to", "voc", "--out", tmp_path / "o1",
                   expect="bad.json: malformed JSON")
    one_line_error(capsys, "info", tmp_path / "bad.json", expect="bad.json: malformed JSON")
    (tmp_path / "notes.txt").write_text("hello")
    one_line_error(capsys, "info", tmp_path / "notes.txt", expect="notes.txt: is not something bloodcell reads")
    for name in ("o1",):
        assert not (tmp_path / name).exists()


def test_unknown_class_and_box_outside_image_leave_nothing(capsys, tmp_path, sample_data):
    yolo = tmp_path / "yolo"
    assert main(["convert", str(sample_data / "smear"), "--to", "yolo", "--out", str(yolo)]) == 0
    capsys.readouterr()
    label = yolo / "labels" / "smear_0000.txt"
    original = label.read_text()
    label.write_text(original + "9 0.5 0.5 0.1 0.1\n")
    line = len(original.splitlines()) + 1
    one_line_error(capsys, "convert", yolo, "--to", "coco", "--out", tmp_path / "c1",
                   expect=f"smear_0000.txt: line {line}: class id 9 is unknown (allowed 0..5)")
    label.write_text(original + "0 1.4 0.5 0.3 0.1\n")
    one_line_error(capsys, "convert", yolo, "--to", "coco", "--out", tmp_path / "c2", expect="outside the 640x480 image")
    assert not (tmp_path / "c1").exists() and not (tmp_path / "c2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".c")]


def test_existing_output_is_never_overwritten(capsys, tmp_path, sample_data):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("precious")
    one_line_error(capsys, "convert", sample_data / "smear", "--to", "coco", "--out", out, expect="refusing to overwrite")
    one_line_error(capsys, "sample", "smear", "--out", out, expect="refusing to overwrite")
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_convert_stops_cleanly_when_an_image_is_missing(capsys, tmp_path, sample_data):
    src = tmp_path / "smear"
    shutil.copytree(sample_data / "smear", src)
    (src / "JPEGImages" / "smear_0001.png").unlink()
    one_line_error(capsys, "convert", src, "--to", "yolo", "--out", tmp_path / "y", expect="not found on disk")
    assert not (tmp_path / "y").exists()


def test_console_script_help_and_usage_errors():
    exe = shutil.which("bloodcell") or f"{sys.executable} -m napari_bloodcell.cli.main"
    out = subprocess.run(f"{exe} --help", shell=True, capture_output=True, text=True)
    assert out.returncode == 0 and all(v in out.stdout for v in ("info", "convert", "sample", "view"))
    for verb in ("info", "convert", "sample", "view"):
        assert subprocess.run(f"{exe} {verb} --help", shell=True, capture_output=True).returncode == 0
    bad = subprocess.run(f"{exe} convert x --to pascal --out y", shell=True, capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_view_opens_napari_with_the_sample_and_saves_what_it_shows(tmp_path):
    """The README's main command, headless: napari with the sample smear detected and under review (needs the Xvfb
    display)."""
    import os

    if not os.environ.get("DISPLAY"):
        pytest.skip("no display (pytest-xvfb provides one)")
    shot = tmp_path / "smear.png"
    exe = shutil.which("bloodcell") or f"{sys.executable} -m napari_bloodcell.cli.main"
    env = {**os.environ, "BLOODCELL_HOME": str(tmp_path / "home")}
    out = subprocess.run(f"{exe} view --sample smear --review --reviewer tester --screenshot {shot}", shell=True,
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    sidecars = list((tmp_path / "home" / "reviews" / "default" / "images").glob("*.json"))
    assert len(sidecars) == 1  # the sample was detected and its review started (and saved)
    from napari_bloodcell.core.io.images import read_image

    pixels = read_image(shot)
    assert pixels.shape[0] > 400 and pixels.shape[1] > 600
    reddish = (pixels[..., 0].astype(int) - pixels[..., 1]) > 40  # red cells are on screen, not a black canvas
    assert reddish.mean() > 0.05
