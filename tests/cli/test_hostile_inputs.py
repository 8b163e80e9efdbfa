"""Issue 13's corpus: each hostile or broken input found by hand, as a named regression test.

The contract for every case: ``bloodcell`` exits 2 with one line naming the file and the problem (never a
traceback), writes nothing outside its output folder, and leaves existing files untouched; the napari reader
raises the project's input error instead of crashing.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from napari_bloodcell.cli.main import main
from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.io.formats import read_annotations
from napari_bloodcell.core.io.images import png_bytes

from ..core.helpers import make_images


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *args, match: str = "") -> str:
    """Run a verb that must refuse: exit 2, one line on stderr, no traceback; returns the line."""
    code, _, err = run(capsys, *args)
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert match.lower() in err.lower(), err
    return err


def reader_refuses(path: Path) -> None:
    """The napari reader either does not claim the path or raises the project's input error."""
    from napari_bloodcell.gui._reader import get_reader

    reader = get_reader(str(path))
    if reader is not None:
        with pytest.raises(BloodcellInputError):
            reader(str(path))


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def coco(folder: Path, images: list[dict] | None = None, annotations: list | None = None,
         categories: list | None = None, **top) -> Path:
    """A COCO file beside one real 64x48 image ``img_0.png`` (in ``folder``)."""
    make_images(folder, sizes=((64, 48),))
    data = {"images": images if images is not None else [{"id": 1, "file_name": "img_0.png", "width": 64,
                                                           "height": 48}],
            "annotations": annotations if annotations is not None else [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 12]}],
            "categories": categories if categories is not None else [{"id": 1, "name": "RBC"},
                                                                     {"id": 2, "name": "WBC"}], **top}
    path = folder / "annotations.json"
    path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------------------------------------------- security


def test_coco_file_name_with_dotdot_cannot_overwrite_a_file(capsys, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    ds = tmp_path / "ds"
    src = coco(ds, images=[{"id": 1, "file_name": "../../victim.txt", "width": 64, "height": 48}])
    refused(capsys, "convert", src, "--to", "coco", "--out", tmp_path / "out", match="not found")
    assert victim.read_text() == "precious" and not (tmp_path / "out").exists()


def test_coco_file_name_with_dotdot_to_a_real_image_is_written_inside_the_output(capsys, tmp_path):
    victim_dir = tmp_path / "elsewhere"
    make_images(victim_dir, sizes=((64, 48),))
    ds = tmp_path / "a" / "ds"
    src = coco(ds, images=[{"id": 1, "file_name": "../../elsewhere/img_0.png", "width": 64, "height": 48}])
    (ds / "img_0.png").unlink()
    before = tree(tmp_path / "elsewhere")
    for to in ("coco", "voc", "yolo"):
        out = tmp_path / f"out_{to}"
        code, _, err = run(capsys, "convert", src, "--to", to, "--out", out)
        assert code == 0, err
        written = [p.resolve() for p in out.rglob("*")]
        assert all(out.resolve() in p.parents for p in written)
    assert tree(tmp_path / "elsewhere") == before
    assert (tmp_path / "out_coco" / "images" / "elsewhere" / "img_0.png").is_file()
    assert not any(p.name == "img_0.png" for p in tmp_path.glob("*"))


def test_absolute_file_name_that_is_not_an_image_is_never_copied(capsys, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    src = coco(tmp_path / "ds", images=[{"id": 1, "file_name": str(secret), "width": 64, "height": 48}])
    refused(capsys, "convert", src, "--to", "coco", "--out", tmp_path / "out", match="not found")
    refused(capsys, "convert", src, "--to", "coco", "--out", tmp_path / "out2", match="not found")
    src = coco(tmp_path / "ds2", images=[{"id": 1, "file_name": "/etc/passwd", "width": 64, "height": 48}])
    refused(capsys, "convert", src, "--to", "yolo", "--out", tmp_path / "out3", match="not found")
    assert not any((tmp_path / n).exists() for n in ("out", "out2", "out3"))


def test_a_text_file_named_like_an_image_is_not_an_image(capsys, tmp_path):
    ds = tmp_path / "ds"
    src = coco(ds)
    (ds / "img_0.png").write_text("root:x:0:0")  # the right name, the wrong content
    refused(capsys, "convert", src, "--to", "coco", "--out", tmp_path / "out", match="not found")


def test_voc_path_element_cannot_pull_in_a_file(capsys, tmp_path):
    ann = tmp_path / "voc" / "Annotations"
    ann.mkdir(parents=True)
    (tmp_path / "voc" / "JPEGImages").mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    (ann / "a.xml").write_text(
        f"<annotation><filename>missing.jpg</filename><path>{secret}</path><size><width>64</width>"
        "<height>48</height></size><object><name>RBC</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax>"
        "<ymax>9</ymax></bndbox></object></annotation>")
    assert read_annotations(tmp_path / "voc").images[0].path is None
    refused(capsys, "convert", tmp_path / "voc", "--to", "coco", "--out", tmp_path / "out", match="not found")
    assert not (tmp_path / "out").exists()


def _project_with_sidecar(tmp_path: Path, **image_changes) -> Path:
    from napari_bloodcell.core.review_project import ReviewProject, import_predictions

    ds = tmp_path / "ds"
    coco(ds)
    project = ReviewProject(tmp_path / "project")
    keys = import_predictions(project, read_annotations(ds / "annotations.json"), review_default="accepted")
    sidecar = project.sidecar(keys[0])
    data = json.loads(sidecar.read_text())
    data["image"].update(image_changes)
    sidecar.write_text(json.dumps(data))
    return project.folder


def test_export_sidecar_digest_cannot_write_outside_the_dataset(capsys, tmp_path):
    project = _project_with_sidecar(tmp_path, digest="../../X", path=str(tmp_path / "ds" / "img_0.png"))
    refused(capsys, "export", project, "--dataset", tmp_path / "work" / "dataset", "--by", "me",
            match="not a hexadecimal content hash")
    assert not list(tmp_path.glob("X*")) and not list((tmp_path / "work").glob("X*"))


def test_export_sidecar_path_to_a_non_image_is_not_copied(capsys, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    project = _project_with_sidecar(tmp_path, path=str(secret))
    refused(capsys, "export", project, "--dataset", tmp_path / "dataset", "--by", "me",
            match="neither a readable image")
    assert not any(p.read_bytes() == b"root:x:0:0" for p in (tmp_path / "dataset").rglob("*") if p.is_file())


def test_export_class_named_dotdot_keeps_crops_inside_crops(tmp_path):
    from napari_bloodcell.core.export import export_dataset, items_from_project
    from napari_bloodcell.core.progress import drain

    ds = tmp_path / "ds"
    coco(ds, categories=[{"id": 1, "name": ".."}, {"id": 2, "name": "WBC"}])
    from napari_bloodcell.core.review_project import ReviewProject, import_predictions

    project = ReviewProject(tmp_path / "project")
    import_predictions(project, read_annotations(ds / "annotations.json"), review_default="accepted")
    result = drain(export_dataset(items_from_project(project.folder), tmp_path / "dataset", by="me"))
    crops = tmp_path / "dataset" / "versions" / "v0001" / "crops"
    assert result.crops == 1 and len(list(crops.rglob("*.png"))) == 1
    assert not list((tmp_path / "dataset" / "versions" / "v0001").glob("*.png"))


def test_billion_laughs_yaml_is_refused_quickly(capsys, tmp_path):
    root = tmp_path / "yolo"
    make_images(root / "images", sizes=((64, 48),))
    (root / "labels").mkdir()
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for k in range(1, 9):
        prev = chr(ord("a") + k - 1)
        cur = chr(ord("a") + k)
        lines.append(f"{cur}: &{cur} [{','.join('*' + prev for _ in range(9))}]")
    lines.append("names: *i")
    (root / "data.yaml").write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    refused(capsys, "info", root / "data.yaml", match="alias")
    refused(capsys, "convert", root, "--to", "coco", "--out", tmp_path / "out", match="alias")
    refused(capsys, "evaluate", "detection", "--pred", tmp_path / "none.json", "--gt", root, match="")
    reader_refuses(root)
    assert time.perf_counter() - start < 20


# -------------------------------------------------------------------------------------------------- robustness


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "abc"])
def test_voc_non_finite_coordinate(capsys, tmp_path, value):
    ann = tmp_path / "Annotations"
    ann.mkdir()
    make_images(tmp_path / "JPEGImages", sizes=((64, 48),))
    (ann / "img_0.xml").write_text(
        "<annotation><filename>img_0.png</filename><size><width>64</width><height>48</height></size>"
        f"<object><name>RBC</name><bndbox><xmin>{value}</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox>"
        "</object></annotation>")
    refused(capsys, "info", tmp_path, match="xmin")
    reader_refuses(tmp_path)


def test_voc_score_and_review_state_must_be_valid(capsys, tmp_path):
    ann = tmp_path / "Annotations"
    ann.mkdir()
    make_images(tmp_path / "JPEGImages", sizes=((64, 48),))
    body = ("<annotation><filename>img_0.png</filename><size><width>64</width><height>48</height></size>"
            "<object><name>RBC</name>{extra}<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>"
            "</bndbox></object></annotation>")
    (ann / "img_0.xml").write_text(body.format(extra="<score>abc</score>"))
    refused(capsys, "info", tmp_path, match="score")
    (ann / "img_0.xml").write_text(body.format(extra="<review>hacked</review>"))
    refused(capsys, "info", tmp_path, match="unknown review state")
    (ann / "img_0.xml").write_text(body.format(extra=f"<truncated>{'9' * 5000}</truncated>"))
    refused(capsys, "info", tmp_path, match="truncated")


@pytest.mark.parametrize("bbox", [[float("nan"), 1, 2, 3], [1, 2, "inf", 3], [1e400, 1, 1, 1], {"a": 1, "b": 2, "c": 3, "d": 4},
                                  [1, 2, 3], "1,2,3,4", [1, 2, -5, 3]])
def test_coco_bad_bbox(capsys, tmp_path, bbox):
    path = coco(tmp_path, annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox}])
    text = path.read_text().replace("Infinity", "1e400")  # json.dumps writes NaN/Infinity for floats
    path.write_text(text)
    refused(capsys, "info", path, match=str(path.name))
    reader_refuses(path)


@pytest.mark.parametrize("change,match", [
    ({"annotations": None}, "'annotations' is null"),
    ({"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "score": "high"}]}, "score"),
    ({"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "score": [1]}]}, "score"),
    ({"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "attributes": [1]}]},
     "attributes"),
    ({"annotations": [{"id": 1, "image_id": 1, "category_id": 1.7, "bbox": [1, 1, 5, 5]}]}, "whole number"),
    ({"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5],
                       "attributes": {"review": "hacked"}}]}, "unknown review state"),
    ({"images": [{"id": 1, "file_name": "img_0.png", "width": 64, "height": 48},
                 {"id": 1, "file_name": "img_0.png", "width": 64, "height": 48}]}, "used twice"),
    ({"categories": [{"id": 1, "name": "RBC\nWBC"}]}, "control character"),
    ({"categories": [{"id": 1, "name": "RBC"}, {"id": 1, "name": "WBC"}]}, "repeat"),
])
def test_coco_silently_wrong_becomes_refusal(capsys, tmp_path, change, match):
    path = coco(tmp_path, **{k: v for k, v in change.items() if k in ("images", "annotations", "categories")})
    if "annotations" in change and change["annotations"] is None:
        data = json.loads(path.read_text())
        data["annotations"] = None
        path.write_text(json.dumps(data))
    refused(capsys, "info", path, match=match)
    reader_refuses(path)


def test_huge_integer_and_deep_json(capsys, tmp_path):
    path = coco(tmp_path)
    path.write_text(path.read_text().replace('"width": 64', '"width": ' + "9" * 5000))
    refused(capsys, "info", path, match="malformed JSON")
    path.write_text('{"images": [], "categories": ' + "[" * 200_000 + "]" * 200_000 + "}")
    refused(capsys, "info", path, match="nested")
    reader_refuses(path)


def test_json_nan_constant_is_refused(capsys, tmp_path):
    path = coco(tmp_path, annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5],
                                        "score": float("nan")}])
    refused(capsys, "info", path, match="NaN")


def _yolo(root: Path, lines: str, classes: str | bytes = "RBC\nWBC\n") -> Path:
    make_images(root / "images", sizes=((64, 48),))
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "img_0.txt").write_text(lines)
    if isinstance(classes, bytes):
        (root / "classes.txt").write_bytes(classes)
    else:
        (root / "classes.txt").write_text(classes)
    return root


@pytest.mark.parametrize("line,match", [
    ("0 nan 0.5 0.1 0.1", "value 2"), ("0 0.5 inf 0.1 0.1", "value 3"), ("0 0.5 0.5 1e400 0.1", "value 4"),
    ("nan 0.5 0.5 0.1 0.1", "class id"), ("inf 0.5 0.5 0.1 0.1", "class id"), ("1.5 0.5 0.5 0.1 0.1", "class id"),
    ("7 0.5 0.5 0.1 0.1", "class id 7 is unknown"), ("0 0.5 0.5 -0.1 0.1", "negative"),
])
def test_yolo_bad_line(capsys, tmp_path, line, match):
    root = _yolo(tmp_path / "y", line + "\n")
    refused(capsys, "info", root, match=match)
    reader_refuses(root)


def test_yolo_class_files(capsys, tmp_path):
    root = _yolo(tmp_path / "a", "0 0.5 0.5 0.1 0.1\n", classes=b"RBC\n\xff\xfeWBC\n")
    refused(capsys, "info", root, match="not UTF-8")
    root = _yolo(tmp_path / "b", "0 0.5 0.5 0.1 0.1\n", classes="RBC\nRBC\n")
    refused(capsys, "info", root, match="repeat")


def test_yolo_names_mapping_keeps_ids(capsys, tmp_path):
    root = _yolo(tmp_path / "y", "2 0.5 0.5 0.2 0.2\n5 0.2 0.2 0.1 0.1\n", classes="")
    (root / "classes.txt").unlink()
    (root / "data.yaml").write_text("names: {0: RBC, 2: WBC, 5: Platelets}\n")
    aset = read_annotations(root)
    assert aset.classes == ["RBC", "WBC", "Platelets"]
    assert [aset.classes[i] for i in aset.images[0].labels] == ["WBC", "Platelets"]
    (root / "data.yaml").write_text("names: {-1: RBC, 0: WBC}\n")
    refused(capsys, "info", root, match="allowed 0..")


def test_csv_not_utf8_and_bad_numbers(capsys, tmp_path):
    make_images(tmp_path, sizes=((64, 48),))
    path = tmp_path / "boxes.csv"
    path.write_bytes(b"image,xmin,ymin,xmax,ymax,label\nimg_0.png,1,1,9,9,\xffRBC\n")
    refused(capsys, "info", path, match="not UTF-8")
    path.write_text("image,xmin,ymin,xmax,ymax,label\nimg_0.png,1,nan,9,9,RBC\n")
    refused(capsys, "info", path, match="ymin")


def test_fifo_is_refused_not_read(capsys, tmp_path):
    fifo = tmp_path / "x.xml"
    os.mkfifo(fifo)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("run", run(capsys, "info", fifo)), daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "bloodcell info blocked on a FIFO"
    code, _, err = result["run"]
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_os_errors_are_one_line(capsys, tmp_path, monkeypatch):
    src = coco(tmp_path / "ds")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    refused(capsys, "convert", src, "--to", "coco", "--out", blocker / "out", match=str(blocker))
    refused(capsys, "convert", src, "--to", "coco", "--out", tmp_path / ("n" * 300), match="too long")

    import shutil

    def full_disk(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out"))

    monkeypatch.setattr(shutil, "copy2", full_disk)
    refused(capsys, "convert", src, "--to", "coco", "--out", tmp_path / "out", match="No space left")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_plots_and_dataset_that_are_files(capsys, tmp_path):
    src = coco(tmp_path / "ds")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    refused(capsys, "evaluate", "detection", "--pred", src, "--gt", src, "--plots", blocker, match="is a file")
    project = _project_with_sidecar(tmp_path)
    refused(capsys, "export", project, "--dataset", blocker, "--by", "me", match="is a file")
    assert blocker.read_text() == "x"


def test_evaluate_plots_never_overwrite(capsys, tmp_path):
    src = coco(tmp_path / "ds", annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 12],
                                               "score": 0.9}])
    plots = tmp_path / "plots"
    code, _, err = run(capsys, "evaluate", "detection", "--pred", src, "--gt", src, "--plots", plots)
    assert code == 0, err
    before = tree(plots)
    assert before
    refused(capsys, "evaluate", "detection", "--pred", src, "--gt", src, "--plots", plots, match="already exists")
    assert tree(plots) == before


@pytest.mark.parametrize("iou", ["nan", "0", "2", "-1", "inf"])
def test_evaluate_iou_is_checked(capsys, tmp_path, iou):
    src = coco(tmp_path / "ds")
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "detection", "--pred", str(src), "--gt", str(src), "--iou", iou])
    assert exc.value.code == 2
    assert "--iou" in capsys.readouterr().err


def test_evaluate_json_has_null_not_nan(capsys, tmp_path):
    src = coco(tmp_path / "ds", categories=[{"id": 1, "name": "RBC"}, {"id": 2, "name": "NaNocyte"}],
               annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 12], "score": 0.9}])
    code, out, err = run(capsys, "evaluate", "detection", "--pred", src, "--gt", src, "--json")
    assert code == 0, err
    data = json.loads(out, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert data["per_class"]["NaNocyte"]["AP50"] is None and "NaNocyte" in data["per_class"]


def test_malicious_checkpoint_refusal_never_suggests_unsafe_loading(capsys, tmp_path):
    import torch

    path = tmp_path / "evil.pt"
    torch.save({"format": "napari-bloodcell/detector", "payload": Path("x")}, path)
    err = refused(capsys, "detect", tmp_path / "none.png", "--model", path, "--out", tmp_path / "p.json",
                  match="")
    assert "weights_only=False" not in err
    make_images(tmp_path / "imgs", sizes=((64, 48),))
    err = refused(capsys, "detect", tmp_path / "imgs" / "img_0.png", "--model", path, "--out", tmp_path / "p.json",
                  match="refused")
    assert "weights_only" not in err and "could run code" in err


def test_memory_error_is_one_line(capsys, tmp_path, monkeypatch):
    import napari_bloodcell.core.info as info

    def boom(_path):
        raise MemoryError()

    monkeypatch.setattr(info, "describe", boom)
    refused(capsys, "info", tmp_path, match="memory")


def test_a_bug_says_it_is_a_bug(capsys, tmp_path, monkeypatch):
    import napari_bloodcell.core.info as info

    def bug(_path):
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(info, "describe", bug)
    code, _, err = run(capsys, "info", tmp_path)
    assert code == 1 and "Traceback" in err and "please report it" in err


def test_stale_partials_are_cleaned_but_not_live_ones(capsys, tmp_path):
    project = _project_with_sidecar(tmp_path)
    dataset = tmp_path / "dataset"
    assert run(capsys, "export", project, "--dataset", dataset, "--by", "me")[0] == 0
    stale_dir = dataset / "versions" / ".v0002.abc123.partial"
    stale_dir.mkdir()
    (stale_dir / "annotations.json").write_text("{}")
    stale_tmp = dataset / "images" / ".0123abcd.png.xyz.tmp"
    stale_tmp.write_bytes(b"half")
    old = time.time() - 3600
    for p in (stale_dir, stale_tmp):
        os.utime(p, (old, old))
    live = dataset / "versions" / ".v0009.live.partial"
    live.mkdir()
    future = time.time() + 3600  # made after this export took the lock
    os.utime(live, (future, future))
    assert run(capsys, "export", project, "--dataset", dataset, "--by", "me")[0] == 0
    assert not stale_dir.exists() and not stale_tmp.exists() and live.exists()


def test_unknown_review_state_in_sidecar_is_refused(capsys, tmp_path):
    project = _project_with_sidecar(tmp_path)
    sidecar = next((project / "images").glob("*.json"))
    data = json.loads(sidecar.read_text())
    data["cells"]["review"] = ["hacked"] * len(data["cells"]["review"])
    sidecar.write_text(json.dumps(data))
    refused(capsys, "export", project, "--dataset", tmp_path / "dataset", "--by", "me", match="unknown review state")


def test_dataset_manifest_version_path_cannot_leave_the_dataset(capsys, tmp_path):
    project = _project_with_sidecar(tmp_path)
    dataset = tmp_path / "dataset"
    assert run(capsys, "export", project, "--dataset", dataset, "--by", "me")[0] == 0
    manifest = json.loads((dataset / "dataset.json").read_text())
    manifest["versions"][0]["path"] = "../../elsewhere"
    (dataset / "dataset.json").write_text(json.dumps(manifest))
    refused(capsys, "info", dataset, match="versions/vNNNN")
    refused(capsys, "export", project, "--dataset", dataset, "--by", "me", match="versions/vNNNN")


def test_images_round_trip_unchanged_by_the_checks(tmp_path):
    """The checks refuse hostile files, not ordinary ones: a valid set converts and reads back the same."""
    src = coco(tmp_path / "ds")
    aset = read_annotations(src)
    assert aset.images[0].path is not None and np.allclose(aset.images[0].boxes, [[1, 2, 11, 14]])
    assert png_bytes(np.zeros((2, 2), np.uint8))


def test_our_own_json_never_holds_nan_and_old_nan_registries_still_read(tmp_path):
    """A NaN metric is written as null (strict readers refuse NaN); registries written with NaN before stay usable."""
    from napari_bloodcell.core.models.registry import FORMAT, ModelRegistry
    from napari_bloodcell.core.untrusted import json_text

    assert json.loads(json_text({"a": float("nan"), "b": [np.float32("inf"), 1.5]})) == {"a": None, "b": [None, 1.5]}
    folder = tmp_path / "registry"
    folder.mkdir()
    (folder / "registry.json").write_text(
        '{"format": "%s", "versions": [{"id": "v0001", "file": "models/v0001.pt", "task": "detector", '
        '"metrics": {"map50": NaN}}], "active": {}, "history": []}' % FORMAT)
    registry = ModelRegistry(folder)
    assert registry.get("v0001")["metrics"]["map50"] is None
    registry._write(registry.load() | {"note": float("nan")})
    json.loads((folder / "registry.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} written"))
