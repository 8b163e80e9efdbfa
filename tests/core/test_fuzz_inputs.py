"""Property-based tests of the untrusted-input contract (hypothesis).

Malformed and hostile VOC, COCO, YOLO, CSV, image and NIfTI files are generated; every read, and every convert
of what was read, must either succeed or raise :class:`BloodcellInputError`, within a time and memory bound, and
never write outside its output folder. The example budget is fixed (``BLOODCELL_FUZZ_EXAMPLES``, default 30 per
property) so CI time stays bounded; raise it locally for a deeper search.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from napari_bloodcell.core.convert import convert_annotations  # noqa: E402
from napari_bloodcell.core.errors import BloodcellInputError  # noqa: E402
from napari_bloodcell.core.io.formats import read_annotations  # noqa: E402
from napari_bloodcell.core.io.images import png_bytes, read_image  # noqa: E402
from napari_bloodcell.core.io.nifti import load_nifti  # noqa: E402
from napari_bloodcell.core.progress import drain  # noqa: E402

EXAMPLES = int(os.environ.get("BLOODCELL_FUZZ_EXAMPLES", "30"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SECONDS = 20.0
"""Per call; the slowest legitimate case here (a convert of a few tiny images) takes well under a second."""
PEAK_BYTES = 256 * 1024 * 1024
"""Python-side allocation bound per call: a few tiny files must never cost more (a YAML bomb costs gigabytes)."""

HOSTILE_TEXT = ["../../victim.txt", "/etc/passwd", "..", ".", "", "a\nb", "\x00", "NaN", "1e400", "-1",
                "9" * 5000, "img_0.png", "images/../../x.png", "C:\\x.png", "\u202e.png", " " * 3, "*a", "&a [1]"]
numbers = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, -1, 64, 48, 1.7, 1e400, 10**400]))
texts = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=30))
json_values = st.recursive(st.one_of(st.none(), st.booleans(), numbers, texts),
                           lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                   st.dictionaries(texts, inner, max_size=4)),
                           max_leaves=12)


def snapshot(folder: Path, skip: Path) -> dict[str, tuple[int, float]]:
    out = {}
    for root, dirs, files in os.walk(folder):
        if Path(root) == skip or skip in Path(root).parents:
            continue
        for name in files + dirs:
            p = Path(root) / name
            if p == skip:
                continue
            st_ = p.lstat()
            out[str(p)] = (st_.st_size, st_.st_mtime_ns)
    return out


def contract(call: Callable[[], Any], sandbox: Path, out: Path | None = None) -> Any:
    """Run ``call``: success or BloodcellInputError only, within the bounds, nothing written outside ``out``."""
    before = snapshot(sandbox, out or sandbox / "__none__")
    tracemalloc.start()
    start = time.perf_counter()
    try:
        result = call()
    except BloodcellInputError as exc:
        assert "\n" not in str(exc), f"multi-line message: {exc!r}"
        result = exc
    finally:
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < SECONDS, f"took {elapsed:.1f} s"
    assert peak < PEAK_BYTES, f"allocated {peak / 1e6:.0f} MB"
    assert snapshot(sandbox, out or sandbox / "__none__") == before, "a file outside the output was changed"
    return result


def read_and_convert(path: Path, sandbox: Path) -> None:
    """Read ``path``; when it reads, convert it to every format into fresh folders."""
    aset = contract(lambda: read_annotations(path), sandbox)
    if isinstance(aset, BloodcellInputError):
        return
    for to in ("coco", "voc", "yolo"):
        out = sandbox / f"out_{to}"
        contract(lambda: drain(convert_annotations(aset, out, to)), sandbox, out)
        if out.exists():
            assert all(out.resolve() in p.resolve().parents for p in out.rglob("*"))


def image_folder(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "img_0.png").write_bytes(png_bytes(np.full((48, 64, 3), 200, np.uint8)))
    (root / "victim.txt").write_text("precious")


# ------------------------------------------------------------------------------------------------------- COCO

COCO_VALID = {"images": [{"id": 1, "file_name": "img_0.png", "width": 64, "height": 48}],
              "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 12], "score": 0.5,
                               "attributes": {"review": "accepted", "source": "x"}}],
              "categories": [{"id": 1, "name": "RBC"}, {"id": 2, "name": "WBC"}]}
COCO_SLOTS = [("images", 0, "id"), ("images", 0, "file_name"), ("images", 0, "width"), ("images", 0, "height"),
              ("annotations", 0, "image_id"), ("annotations", 0, "category_id"), ("annotations", 0, "bbox"),
              ("annotations", 0, "score"), ("annotations", 0, "attributes"), ("categories", 0, "id"),
              ("categories", 0, "name"), ("images", None, None), ("annotations", None, None),
              ("categories", None, None)]


@FUZZ
@given(changes=st.lists(st.tuples(st.sampled_from(COCO_SLOTS), json_values), min_size=1, max_size=4),
       duplicate=st.booleans())
def test_coco_mutations_keep_the_contract(changes, duplicate):
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        ds = sandbox / "a" / "ds"
        image_folder(ds)
        data = json.loads(json.dumps(COCO_VALID))
        if duplicate:
            data["images"].append(dict(data["images"][0]))
        for (top, index, key), value in changes:
            if index is None:
                data[top] = value
            elif isinstance(data.get(top), list) and data[top] and isinstance(data[top][index], dict):
                data[top][index][key] = value
        path = ds / "annotations.json"
        path.write_text(json.dumps(data))
        read_and_convert(path, sandbox)


@FUZZ
@given(cut=st.integers(0, 400), junk=st.binary(max_size=40))
def test_coco_byte_damage_keeps_the_contract(cut, junk):
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        image_folder(sandbox / "ds")
        raw = json.dumps(COCO_VALID).encode()
        path = sandbox / "ds" / "annotations.json"
        path.write_bytes(raw[:cut] + junk + raw[cut + len(junk):])
        read_and_convert(path, sandbox)


# -------------------------------------------------------------------------------------------------------- VOC

VOC_FIELDS = ("filename", "path", "width", "height", "name", "xmin", "ymin", "xmax", "ymax", "score", "review",
              "truncated")
VOC_TEMPLATE = ("<annotation><filename>{filename}</filename><path>{path}</path><size><width>{width}</width>"
                "<height>{height}</height></size><object><name>{name}</name><score>{score}</score>"
                "<review>{review}</review><truncated>{truncated}</truncated><bndbox><xmin>{xmin}</xmin>"
                "<ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object></annotation>")
VOC_VALID = {"filename": "img_0.png", "path": "", "width": "64", "height": "48", "name": "RBC", "xmin": "2",
             "ymin": "3", "xmax": "20", "ymax": "30", "score": "0.5", "review": "accepted", "truncated": "0"}


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(VOC_FIELDS), st.one_of(texts, numbers.map(str)), max_size=4))
def test_voc_mutations_keep_the_contract(changes):
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        root = sandbox / "voc"
        image_folder(root / "JPEGImages")
        (root / "Annotations").mkdir()
        fields = {**VOC_VALID, **changes}
        (root / "Annotations" / "img_0.xml").write_text(VOC_TEMPLATE.format(**fields), encoding="utf-8",
                                                       errors="surrogatepass")
        read_and_convert(root, sandbox)


# ------------------------------------------------------------------------------------------------ YOLO and CSV

tokens = st.one_of(st.sampled_from(["0", "1", "0.5", "0.1", "nan", "inf", "-1", "1e400", "2.5", "9" * 400]),
                   st.text(alphabet="0123456789.-e", max_size=8))


@FUZZ
@given(lines=st.lists(st.lists(tokens, max_size=9).map(" ".join), max_size=5),
       classes=st.one_of(st.binary(max_size=40), st.sampled_from([b"RBC\nWBC\n", b"RBC\nRBC\n", b"\xff\xfe"])),
       yaml_text=st.one_of(st.none(), st.sampled_from(["names: {0: RBC, 2: WBC}", "names: {-1: A}",
                                                       "names: [a, *b]", "a: &a [1]\nnames: *a", "names: 3",
                                                       "names: {1.5: A}", "[[[[", "names: [A, A]"]),
                           st.text(max_size=40)))
def test_yolo_mutations_keep_the_contract(lines, classes, yaml_text):
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        root = sandbox / "yolo"
        image_folder(root / "images")
        (root / "labels").mkdir()
        (root / "labels" / "img_0.txt").write_text("\n".join(lines))
        if yaml_text is None:
            (root / "classes.txt").write_bytes(classes)
        else:
            (root / "data.yaml").write_text(yaml_text, encoding="utf-8", errors="surrogatepass")
        read_and_convert(root, sandbox)


@FUZZ
@given(rows=st.lists(st.tuples(st.sampled_from(["img_0.png", "../x.png", "/etc/passwd", "victim.txt", ""]),
                               tokens, tokens, tokens, tokens, texts), min_size=1, max_size=4))
def test_csv_mutations_keep_the_contract(rows):
    import csv

    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        image_folder(sandbox / "ds")
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["image", "xmin", "ymin", "xmax", "ymax", "label"])
        writer.writerows(rows)
        path = sandbox / "ds" / "boxes.csv"
        path.write_text(buffer.getvalue(), encoding="utf-8", errors="surrogatepass")
        read_and_convert(path, sandbox)


# ------------------------------------------------------------------------------------------- images and NIfTI


def _image_bytes(fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(
        buffer, format={"png": "PNG", "jpg": "JPEG", "bmp": "BMP", "tif": "TIFF"}[fmt])
    return buffer.getvalue()


@FUZZ
@given(fmt=st.sampled_from(["png", "jpg", "bmp", "tif"]), offset=st.integers(0, 200),
       patch=st.binary(min_size=1, max_size=16), truncate=st.one_of(st.none(), st.integers(0, 400)))
def test_damaged_images_keep_the_contract(fmt, offset, patch, truncate):
    raw = bytearray(_image_bytes(fmt))
    raw[offset:offset + len(patch)] = patch
    data = bytes(raw if truncate is None else raw[:truncate])
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        path = sandbox / f"x.{fmt}"
        path.write_bytes(data)
        result = contract(lambda: read_image(path), sandbox)
        if not isinstance(result, BloodcellInputError):
            assert result.ndim in (2, 3) and result.shape[0] > 0 and result.shape[1] > 0


def _nifti_bytes() -> bytes:
    import nibabel as nib

    img = nib.Nifti1Image(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), np.diag([1.0, 2.0, 3.0, 1.0]))
    return img.to_bytes()


@FUZZ
@given(offset=st.integers(0, 352), patch=st.binary(min_size=1, max_size=8), gz=st.booleans(),
       truncate=st.one_of(st.none(), st.integers(0, 600)))
def test_damaged_nifti_keeps_the_contract(offset, patch, gz, truncate):
    raw = bytearray(_nifti_bytes())
    raw[offset:offset + len(patch)] = patch
    data = bytes(raw if truncate is None else raw[:truncate])
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        path = sandbox / ("x.nii.gz" if gz else "x.nii")
        path.write_bytes(gzip.compress(data) if gz else data)
        result = contract(lambda: load_nifti(path), sandbox)
        if not isinstance(result, BloodcellInputError):
            assert result.data.ndim in (3, 4)
            assert np.all(np.isfinite(result.affine))
