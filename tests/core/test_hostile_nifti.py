"""Hostile and broken NIfTI files (issue 13): each is read correctly, with a warning saying what was done, or refused
with one line naming the file and the problem, the same way by ``info``, ``segment`` and the napari reader.

The files are built here with nibabel and by editing header fields after encoding, as a broken tool or an attacker
would write them.
"""

from __future__ import annotations

import gzip
import io
import os
import threading
import tracemalloc
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_bloodcell.cli.main import main
from napari_bloodcell.core.datasets.volumes import load_image_channels, probe_case, zscore
from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.inference.segment3d import (
    Segmenter,
    build_segmenter_model,
    load_segmenter,
    segment_array,
)
from napari_bloodcell.core.io.nifti import MAX_CHANNELS, Volume, load_nifti, nifti_bytes, read_header
from napari_bloodcell.core.models.checkpoints import save_checkpoint
from napari_bloodcell.core.progress import drain
from napari_bloodcell.gui._reader import read_paths
from napari_bloodcell.gui.layers import volume_layers

SHAPE = (10, 9, 8)
QFORM = np.array([[0, 0, 1.5, -40], [-1.2, 0, 0, 30], [0, 2.0, 0, -10], [0, 0, 0, 1]], dtype=float)
ZERO_ROWS = {"srow_x": [0, 0, 0, 0], "srow_y": [0, 0, 0, 0], "srow_z": [0, 0, 0, 0]}
NAN_PIXDIM = [1, np.nan, np.nan, np.nan, 1, 1, 1, 1]
ARCH_ARGS = {"in_channels": 1, "n_classes": 2, "features": [4, 4, 4], "head_features": 4, "blocks_per_stage": 1}


def write(path: Path, data: np.ndarray | None = None, affine: np.ndarray = QFORM, **fields) -> Path:
    """A NIfTI-1 file whose header fields are overwritten after nibabel encoded it (nibabel would not write them)."""
    data = np.random.default_rng(0).normal(100, 20, SHAPE).astype(np.float32) if data is None else data
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    raw = bytearray(img.to_bytes())
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(bytes(raw[:348])))
    for key, value in fields.items():
        header[key] = value
    raw[:348] = header.binaryblock
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(bytes(raw)) if path.name.endswith(".gz") else bytes(raw))
    return path


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *argv) -> str:
    """Run a verb that must refuse: exit 2, one line on stderr, no traceback; the line is returned."""
    code, _, err = cli(capsys, *argv)
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def finite_limits(layers) -> list[tuple[float, float]]:
    limits = []
    for _, kwargs, kind in layers:
        assert kind == "image"
        lims = kwargs["contrast_limits"]
        lims = lims if isinstance(lims[0], list | tuple) else [lims]
        for lo, hi in lims:
            assert np.isfinite(lo) and np.isfinite(hi) and lo < hi
            limits.append((lo, hi))
    return limits


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """An untrained tiny segmenter whose classifier says label 1 everywhere (so background means "forced")."""
    net = build_segmenter_model("highres3dnet", ARCH_ARGS)
    state = net.state_dict()
    state["conv_2.weight"].zero_()
    state["conv_2.bias"][:] = torch.tensor([0.0, 10.0])
    path = tmp_path_factory.mktemp("model") / "seg.pt"
    save_checkpoint({"format": "napari-bloodcell/segmenter", "arch": "highres3dnet", "arch_args": ARCH_ARGS,
                     "classes": ["background", "thing"], "label_values": [0, 1], "label_names": {"1": "thing"},
                     "preprocessing": {"patch": [8, 8, 8], "spacing": [1.2, 2.0, 1.5]}, "model": state}, path)
    return path


# ------------------------------------------------------------------------------------------ 1. geometry


def test_zero_sform_falls_back_to_the_valid_qform_and_says_so(tmp_path, capsys):
    path = write(tmp_path / "zero_sform.nii.gz", **ZERO_ROWS)
    vol = load_nifti(path)
    np.testing.assert_allclose(vol.affine, QFORM, atol=1e-5)
    assert vol.spacing == pytest.approx((1.2, 2.0, 1.5))
    assert any("sform is all zeros; using the qform" in w for w in vol.warnings)
    code, _, err = cli(capsys, "info", path, "--json")
    assert code == 0, err
    with pytest.warns(UserWarning, match="using the qform"):
        layers = read_paths(str(path))
    np.testing.assert_allclose(layers[0][1]["metadata"]["affine"], QFORM, atol=1e-5)


def test_nan_pixdim_takes_the_voxel_size_from_the_valid_sform(tmp_path):
    vol = load_nifti(write(tmp_path / "nan_pixdim.nii", pixdim=NAN_PIXDIM))
    assert vol.spacing == pytest.approx((1.2, 2.0, 1.5)) and np.all(np.isfinite(vol.affine))
    assert any("pixdim holds voxel size (nan, nan, nan); using the sform" in w for w in vol.warnings)


BROKEN_GEOMETRY = {
    "zero_sform_no_qform_nan_pixdim": {**ZERO_ROWS, "qform_code": 0, "pixdim": NAN_PIXDIM},
    "singular_sform_nan_pixdim": {"srow_x": [1, 0, 0, 0], "srow_y": [2, 0, 0, 0], "srow_z": [0, 0, 1, 0],
                                  "qform_code": 0, "pixdim": NAN_PIXDIM},
    "nan_pixdim_only": {"sform_code": 0, "qform_code": 0, "pixdim": NAN_PIXDIM},
    "nan_quaternion_nan_pixdim": {"sform_code": 0, "quatern_b": np.nan, "pixdim": NAN_PIXDIM},
    "infinite_sform_nan_pixdim": {"srow_y": [0, np.inf, 0, 0], "qform_code": 0, "pixdim": NAN_PIXDIM},
}


@pytest.mark.parametrize("case", sorted(BROKEN_GEOMETRY))
def test_a_header_without_any_usable_transform_is_refused_the_same_everywhere(case, tmp_path, capsys):
    path = write(tmp_path / f"{case}.nii.gz", **BROKEN_GEOMETRY[case])
    with pytest.raises(BloodcellInputError, match="broken header, no usable voxel-to-world transform"):
        load_nifti(path)
    with pytest.raises(BloodcellInputError, match="no usable voxel-to-world transform"):
        read_paths(str(path))
    assert "no usable voxel-to-world transform" in refused(capsys, "info", path)
    # segment refuses from the header, before the model is even looked at (the checkpoint does not exist)
    line = refused(capsys, "segment", path, "--model", tmp_path / "missing.pt", "--out", tmp_path / "out")
    assert f"{path.name}:" in line and "checkpoint" not in line
    assert not (tmp_path / "out").exists()


def test_a_zero_affine_is_refused_when_saving_with_one_line():
    for affine in (np.zeros((4, 4)), np.diag([1.0, 0.0, 1.0, 1.0]), np.full((4, 4), np.nan)):
        with pytest.raises(BloodcellInputError) as info:
            nifti_bytes(np.zeros((2, 2, 2), np.uint8), affine, gz=False, is_label_map=True)
        assert "\n" not in str(info.value) and "transform" in str(info.value)


def test_export_of_a_zero_sform_volume_stores_its_label_map_on_the_valid_grid(tmp_path, capsys):
    image = write(tmp_path / "case.nii.gz", **ZERO_ROWS)
    labels = write(tmp_path / "case_labels.nii.gz", (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 3).astype(np.uint8),
                   **ZERO_ROWS)
    code, _, err = cli(capsys, "export", "--volume", image, labels, "--dataset", tmp_path / "ds", "--by", "tester",
                       "--quiet")
    assert code == 0, err
    stored = nib.load(str(tmp_path / "ds" / "versions" / "v0001" / "labelsTr" / "case.nii.gz"))
    np.testing.assert_allclose(stored.affine, QFORM, atol=1e-5)
    broken = write(tmp_path / "broken.nii.gz", **BROKEN_GEOMETRY["nan_pixdim_only"])
    line = refused(capsys, "export", "--volume", broken, labels, "--dataset", tmp_path / "ds2", "--by", "tester")
    assert "broken.nii.gz: broken header" in line and not (tmp_path / "ds2").exists()


# ------------------------------------------------------------------------------------------- 2. voxel types


def test_complex_voxels_are_refused(tmp_path, capsys):
    data = (np.ones(SHAPE) + 1j).astype(np.complex64)
    path = write(tmp_path / "complex.nii", data)
    with pytest.raises(BloodcellInputError, match="complex voxels"):
        load_nifti(path)
    with pytest.raises(BloodcellInputError, match="complex voxels"):
        read_paths(str(path))
    assert "complex voxels (complex64)" in refused(capsys, "info", path)


def test_rgb24_voxels_become_three_channels(tmp_path, capsys):
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"], rgb["G"] = 10, np.arange(np.prod(SHAPE)).reshape(SHAPE) % 200
    path = write(tmp_path / "colour.nii.gz", rgb)
    vol = load_nifti(path)
    assert vol.data.shape == (*SHAPE, 3) and vol.data.dtype == np.uint8 and not vol.is_label_map
    np.testing.assert_array_equal(vol.data[..., 0], 10)
    np.testing.assert_array_equal(vol.data[..., 1], rgb["G"])
    assert any("3 channels" in w for w in vol.warnings)
    with pytest.warns(UserWarning, match="3 channels"):
        layers = read_paths(str(path))
    assert len(layers[0][1]["name"]) == 3 and len(finite_limits(layers)) == 3
    code, out, err = cli(capsys, "info", path)
    assert code == 0 and "channels 3" in out, err


# ---------------------------------------------------------------------------------------------------- 3. 2D


def test_a_2d_nifti_opens_in_napari_but_segment_refuses_it(tmp_path, capsys, model):
    path = write(tmp_path / "slice.nii.gz", np.random.default_rng(1).random((12, 10)).astype(np.float32))
    layers = read_paths(str(path))
    assert layers[0][0].shape == (12, 10, 1) and finite_limits(layers)
    line = refused(capsys, "segment", path, "--model", model, "--out", tmp_path / "out")
    assert "slice.nii.gz: is a 2D image (shape 12x10x1)" in line and "3D" in line
    assert not (tmp_path / "out").exists()
    seg = _segmenter(model)
    with pytest.raises(BloodcellInputError, match="2D image"):
        drain(segment_array(seg, np.zeros((1, 12, 10, 1), np.float32)))


# ----------------------------------------------------------------------------------------- 4. NaN and inf


def _nan_volume() -> np.ndarray:
    data = np.random.default_rng(2).normal(100, 20, SHAPE).astype(np.float32)
    data[:3] = np.nan  # "outside the head"
    data[5, 5, 5], data[6, 6, 6] = np.inf, -np.inf
    return data


def _segmenter(path: Path) -> Segmenter:
    return load_segmenter(path, "cpu")


def test_napari_gets_finite_contrast_limits_from_nan_and_inf_volumes(tmp_path):
    path = write(tmp_path / "nan.nii.gz", _nan_volume())
    with pytest.warns(UserWarning, match="NaN or infinite"):
        layers = read_paths(str(path))
    (lo, hi), = finite_limits(layers)
    assert 20 < lo < hi < 200
    all_nan = write(tmp_path / "all_nan.nii", np.full(SHAPE, np.nan, np.float32))
    with pytest.warns(UserWarning):
        assert finite_limits(read_paths(str(all_nan))) == [(0.0, 1.0)]
    four_d = Volume.from_array(np.stack([_nan_volume(), np.full(SHAPE, 5.0, np.float32)], -1), QFORM, False)
    with pytest.warns(UserWarning, match="218 of 1,440 voxel values are NaN or infinite"):
        assert len(finite_limits(volume_layers(four_d, "t1t2"))) == 2


def test_zscore_ignores_nan_and_inf_and_gives_them_the_darkest_value():
    image = _nan_volume()[None]
    z = zscore(image)
    assert np.all(np.isfinite(z))
    finite = np.isfinite(image[0])
    assert np.all(z[0][~finite] == z[0].min())
    # the same as the scan with its no-data voxels set to its darkest value (as a 0 background would be)
    filled = np.where(finite, image[0], image[0][finite].min()).astype(np.float64)
    np.testing.assert_allclose(z[0], (filled - filled.mean()) / filled.std(), atol=1e-5)


def test_segment_forces_nan_voxels_to_background_and_warns(tmp_path, model):
    seg = _segmenter(model)
    image = _nan_volume()
    result = drain(segment_array(seg, image, patch=(8, 8, 8)))
    bad = ~np.isfinite(image)
    assert np.all(result.labels[bad] == 0) and np.all(result.labels[~bad] == 1)
    assert any(f"{int(bad.sum()):,} voxel(s)" in w and "background (0)" in w for w in result.warnings)
    with pytest.raises(BloodcellInputError, match="no finite voxel"):
        drain(segment_array(seg, np.full(SHAPE, np.nan, np.float32)))


def test_segment_cli_on_a_nan_volume_with_a_zero_sform_writes_labels_on_the_qform_grid(tmp_path, capsys, model):
    path = write(tmp_path / "case.nii.gz", _nan_volume(), **ZERO_ROWS)
    code, out, err = cli(capsys, "segment", path, "--model", model, "--out", tmp_path / "out", "--patch", 8,
                         "--device", "cpu", "--quiet")
    assert code == 0, err
    assert "using the qform" in out and "NaN or infinite" in out and "Traceback" not in err
    written = nib.load(str(tmp_path / "out" / "case_seg.nii.gz"))
    np.testing.assert_allclose(written.affine, QFORM, atol=1e-5)
    labels = np.asarray(written.dataobj)
    assert np.all(labels[:3] == 0) and labels[5, 5, 5] == 0 and np.all(labels[4:][np.isfinite(_nan_volume()[4:])])


def test_segment_checks_every_case_before_the_first_window(tmp_path, capsys, model):
    """A broken second case (a small .nii.gz cut short, which only decompressing finds) refuses the whole job
    before the first case is segmented: nothing is written, instead of failing half-way."""
    good = write(tmp_path / "in" / "a.nii.gz")
    raw = (tmp_path / "in" / "a.nii.gz").read_bytes()
    (tmp_path / "in" / "b.nii.gz").write_bytes(raw[:-6])  # the voxels are there; the gzip trailer is not
    line = refused(capsys, "segment", good, tmp_path / "in" / "b.nii.gz", "--model", model, "--out",
                   tmp_path / "out", "--patch", 8, "--device", "cpu")
    assert "b.nii.gz: cannot read NIfTI: truncated" in line and not (tmp_path / "out").exists()
    twin = write(tmp_path / "other" / "a.nii.gz")
    line = refused(capsys, "segment", good, twin, "--model", model, "--out", tmp_path / "out")
    assert "both be written as a_seg.nii.gz" in line
    (tmp_path / "file").write_text("x")
    line = refused(capsys, "segment", good, "--model", model, "--out", tmp_path / "file" / "out")
    assert "is a file, not a folder" in line


# ---------------------------------------------------------------------------------------- 5. sizes, channels


def test_a_500_channel_file_is_refused_not_opened_as_500_layers(tmp_path, capsys):
    path = write(tmp_path / "fmri.nii.gz", np.zeros((4, 4, 4, 500), np.uint8))
    for call in (load_nifti, read_header, lambda p: read_paths(str(p))):
        with pytest.raises(BloodcellInputError, match=f"has 500 channels .*at most {MAX_CHANNELS}"):
            call(path)
    assert "500 channels" in refused(capsys, "info", path)
    many = Volume.from_array(np.zeros((4, 4, 4, MAX_CHANNELS + 1), np.float32), np.eye(4), False)
    with pytest.raises(BloodcellInputError, match=f"{MAX_CHANNELS + 1} channels"):
        volume_layers(many, "many")


def test_modalities_of_one_case_are_bounded_together(tmp_path):
    files = [write(tmp_path / f"case_{k:04d}.nii.gz", np.zeros((4, 4, 4, 9), np.float32)) for k in range(2)]
    with pytest.raises(BloodcellInputError, match=f"18 channels; at most {MAX_CHANNELS}"):
        probe_case(files)
    with pytest.raises(BloodcellInputError, match=f"more than {MAX_CHANNELS} channels"):
        load_image_channels(files)


def test_a_header_declaring_a_trillion_voxels_is_refused_before_allocation(tmp_path, capsys, monkeypatch):
    path = write(tmp_path / "huge.nii.gz", dim=[3, 10000, 10000, 10000, 1, 1, 1, 1])
    tracemalloc.start()
    try:
        with pytest.raises(BloodcellInputError, match="1,000,000,000,000 voxel values, above the limit"):
            load_nifti(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6
    assert "BLOODCELL_MAX_PIXELS" in refused(capsys, "info", path)
    # the limit is the project's one setting: lowered, it applies to volumes too; raised, a genuine one opens
    small = write(tmp_path / "small.nii.gz")
    monkeypatch.setenv("BLOODCELL_MAX_PIXELS", "100")
    with pytest.raises(BloodcellInputError, match="above the limit of 100"):
        load_nifti(small)
    monkeypatch.setenv("BLOODCELL_MAX_PIXELS", str(np.prod(SHAPE)))
    assert load_nifti(small).data.shape == SHAPE


@pytest.mark.parametrize("name", ["short.nii", "short.nii.gz"])
def test_a_header_declaring_far_more_data_than_the_file_holds_is_refused_without_allocating(name, tmp_path):
    path = write(tmp_path / name, dim=[3, 1000, 1000, 100, 1, 1, 1, 1])  # 400 MB declared, 3 kB present
    tracemalloc.start()
    try:
        with pytest.raises(BloodcellInputError, match="truncated: the header declares 400,000,000 bytes"):
            load_nifti(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50e6


# ------------------------------------------------------------------------------------ 6. one-line messages


def test_memory_errors_and_multiline_library_errors_become_one_nonempty_line(tmp_path, capsys, monkeypatch):
    path = write(tmp_path / "fine.nii.gz")

    def out_of_memory(*_args, **_kw):
        raise MemoryError()

    monkeypatch.setattr(nib, "load", out_of_memory)
    with pytest.raises(BloodcellInputError, match=r"cannot read NIfTI: not enough memory \(MemoryError\)"):
        load_nifti(path)
    assert refused(capsys, "info", path).endswith("(MemoryError)")

    def multiline(*_args, **_kw):
        raise nib.spatialimages.HeaderDataError("Could not decompose affine:\n[[0. 0.]\n [0. 0.]]")

    monkeypatch.setattr(nib, "load", multiline)
    with pytest.raises(BloodcellInputError) as info:
        load_nifti(path)
    assert "\n" not in str(info.value) and "Could not decompose affine: [[0. 0.] [0. 0.]]" in str(info.value)
    refused(capsys, "info", path)


def test_nibabel_header_fixes_become_warnings_not_stderr_lines(tmp_path, capfd):
    path = write(tmp_path / "zero_pixdim.nii", sform_code=0, qform_code=0, pixdim=[1, 0, 0, 0, 1, 1, 1, 1])
    capfd.readouterr()
    vol = load_nifti(path)
    assert any(w.startswith("nibabel: ") and "pixdim" in w for w in vol.warnings)
    assert capfd.readouterr().err == ""  # nibabel's handler writes to the real stderr, hence capfd


# ------------------------------------------------------------------------------------ 7. regular files only


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_named_like_a_volume_never_hangs(tmp_path, capsys, model):
    fifo = tmp_path / "x.nii"
    os.mkfifo(fifo)
    results: dict[str, object] = {}

    def run() -> None:
        with pytest.raises(BloodcellInputError, match="not a regular file"):
            load_nifti(fifo)
        results["info"] = cli(capsys, "info", fifo)
        results["segment"] = cli(capsys, "segment", fifo, "--model", model, "--out", tmp_path / "out")

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "reading a FIFO blocked"
    for verb in ("info", "segment"):
        code, _, err = results[verb]  # type: ignore[misc]
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


# ---------------------------------------------------------------------------- 8. truncated and non-NIfTI files


def _gz_bytes(data: np.ndarray) -> bytes:
    img = nib.Nifti1Image(data, np.eye(4))
    return gzip.compress(img.to_bytes())


NOT_NIFTI = {
    "truncated.nii.gz": (lambda: _gz_bytes(np.random.default_rng(0).random((30, 30, 30)))[:2000], "truncated"),
    "half.nii.gz": (lambda: (b := _gz_bytes(np.random.default_rng(0).random((30, 30, 30))))[: len(b) // 2],
                    "truncated"),
    "short.nii": (lambda: nib.Nifti1Image(np.ones(SHAPE, np.float32), np.eye(4)).to_bytes()[:600], "truncated"),
    "header_only.nii": (lambda: nib.Nifti1Image(np.ones(SHAPE, np.float32), np.eye(4)).to_bytes()[:100],
                        "ends inside the NIfTI header"),
    "notes.nii": (lambda: b"this is a text file\nnot a volume\n" * 30, "text file"),
    "magic.nii": (lambda: _with_magic(b"abc\x00"), "magic"),
    "pair.nii": (lambda: _with_magic(b"ni1\x00"), "magic"),
    "empty.nii.gz": (lambda: b"", "empty"),
    "plain.nii.gz": (lambda: nib.Nifti1Image(np.ones(SHAPE, np.float32), np.eye(4)).to_bytes(),
                     "not gzip-compressed"),
    "packed.nii": (lambda: _gz_bytes(np.ones(SHAPE, np.float32)), "rename it to .nii.gz"),
    "garbage.nii.gz": (lambda: b"\x1f\x8b" + bytes(range(256)) * 4, "corrupt gzip"),
}


def _with_magic(magic: bytes) -> bytes:
    raw = bytearray(nib.Nifti1Image(np.ones(SHAPE, np.float32), np.eye(4)).to_bytes())
    raw[344:348] = magic
    return bytes(raw)


@pytest.mark.parametrize("name", sorted(NOT_NIFTI))
def test_broken_files_are_one_line_exit_2(name, tmp_path, capsys):
    make, expected = NOT_NIFTI[name]
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(BloodcellInputError, match=expected) as info:
        load_nifti(path)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(path))
    line = refused(capsys, "info", path)
    assert name in line and expected in line
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(BloodcellInputError, match=expected):
            read_paths(str(path))


# ------------------------------------------------------------------------------- property: random corruption

_GOOD = nib.Nifti1Image(np.random.default_rng(3).normal(100, 20, (6, 5, 4)).astype(np.float32), QFORM).to_bytes()


@settings(max_examples=int(os.environ.get("BLOODCELL_FUZZ_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.one_of(st.integers(40, 127), st.integers(252, 327), st.integers(0, 351)),
                                st.integers(0, 255)), min_size=1, max_size=12),
       cut=st.one_of(st.none(), st.integers(0, len(_GOOD))), gz=st.booleans())
def test_random_header_corruption_reads_or_is_refused_in_one_line(tmp_path_factory, edits, cut, gz):
    """Whatever bytes of the header are changed (mostly dim, datatype, pixdim, offset, scaling, qform, sform) and
    wherever the file is cut: a volume with a usable geometry, or one line naming the file; never another
    exception, never a multi-line message."""
    raw = bytearray(_GOOD)
    for offset, value in edits:
        raw[offset] = value
    raw = raw[:cut] if cut is not None else raw
    path = tmp_path_factory.mktemp("fuzz") / ("x.nii.gz" if gz else "x.nii")
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    try:
        vol = load_nifti(path)
    except BloodcellInputError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path)) and exc.problem.strip()
        return
    assert np.all(np.isfinite(vol.affine)) and all(np.isfinite(vol.spacing)) and min(vol.spacing) > 0
    assert vol.data.ndim in (3, 4) and vol.n_channels <= MAX_CHANNELS
    if not vol.is_label_map:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the volume's own notes (nibabel's header fixes) go to napari
            finite_limits(volume_layers(vol, "x"))
