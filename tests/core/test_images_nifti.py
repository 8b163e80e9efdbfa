import gzip

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.io.images import image_size, read_image
from napari_bloodcell.core.io.nifti import load_nifti, save_nifti

RGB = (np.arange(12 * 10 * 3) % 256).astype(np.uint8).reshape(12, 10, 3)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif"])
def test_rgb_images_in_every_format(tmp_path, suffix):
    p = tmp_path / f"x{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(p, RGB)
    else:
        Image.fromarray(RGB).save(p)
    data = read_image(p)
    assert data.shape == (12, 10, 3) and data.dtype == np.uint8
    if suffix != ".jpg":
        np.testing.assert_array_equal(data, RGB)
    assert image_size(p) == (10, 12)


def test_rgba_drops_alpha_and_grey_stays_2d(tmp_path):
    rgba = np.dstack([RGB, np.full((12, 10), 128, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), RGB)
    Image.fromarray(RGB[..., 0]).save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png").shape == (12, 10)
    Image.fromarray(RGB).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (12, 10, 3)


def test_sixteen_bit_png_and_tiff_keep_depth(tmp_path):
    data16 = (np.arange(120, dtype=np.uint16) * 500).reshape(12, 10)
    Image.fromarray(data16).save(tmp_path / "d.png")
    tifffile.imwrite(tmp_path / "d.tif", data16)
    rgb16 = np.stack([data16] * 3, -1)
    tifffile.imwrite(tmp_path / "c.tif", np.moveaxis(rgb16, -1, 0), planarconfig="separate")
    for name in ("d.png", "d.tif"):
        out = read_image(tmp_path / name)
        assert out.dtype == np.uint16
        np.testing.assert_array_equal(out, data16)
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif"), rgb16)


def test_corrupt_and_missing_images_name_the_file(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(BloodcellInputError, match="bad.jpg: cannot read image"):
        read_image(tmp_path / "bad.jpg")
    with pytest.raises(BloodcellInputError, match="no such file"):
        read_image(tmp_path / "none.png")
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(BloodcellInputError, match="unsupported image type"):
        read_image(tmp_path / "x.gif")


AFFINE = np.array([[0, 0, 1.5, -40], [-1.2, 0, 0, 30], [0, 2.0, 0, -10], [0, 0, 0, 1]], dtype=float)


def test_nifti_round_trip_keeps_affine_and_spacing(tmp_path):
    vol = np.random.default_rng(0).normal(100, 20, (8, 9, 10)).astype(np.float32)
    save_nifti(vol, AFFINE, tmp_path / "t1.nii.gz")
    v = load_nifti(tmp_path / "t1.nii.gz")
    np.testing.assert_allclose(v.affine, AFFINE)
    assert v.spacing == pytest.approx((1.2, 2.0, 1.5))
    assert "".join(v.orientation) == "PSR"  # i -> -y (posterior), j -> +z, k -> +x
    assert not v.is_label_map
    np.testing.assert_array_equal(v.data, vol)
    assert v.translate == (-40.0, 30.0, -10.0)


def test_label_map_detection(tmp_path):
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[2:4, 2:4, 2:4] = 1
    labels[5:7, 5:7, 5:7] = 2
    save_nifti(labels.astype(np.float32), np.eye(4), tmp_path / "case_seg.nii")  # float on disk, named as labels
    v = load_nifti(tmp_path / "case_seg.nii")
    assert v.is_label_map and v.data.dtype == np.uint8 and v.label_values() == {0: 496, 1: 8, 2: 8}
    save_nifti(labels, np.eye(4), tmp_path / "plain.nii.gz")  # integer type, few values: labels even unnamed
    assert load_nifti(tmp_path / "plain.nii.gz").is_label_map
    t1 = (np.arange(512) % 200).astype(np.uint8).reshape(8, 8, 8)  # a uint8 scan has many values: an image
    save_nifti(t1, np.eye(4), tmp_path / "t1_u8.nii.gz")
    assert not load_nifti(tmp_path / "t1_u8.nii.gz").is_label_map
    written = nib.load(str(tmp_path / "case_seg.nii"))
    assert written.header.get_intent()[0] == "none"  # saved as an image, read as labels
    save_nifti(labels, np.eye(4), tmp_path / "l.nii.gz", is_label_map=True)
    assert nib.load(str(tmp_path / "l.nii.gz")).header.get_intent()[0] == "label"


def test_four_d_multimodal_and_errors(tmp_path):
    vol = np.random.default_rng(0).random((6, 7, 8, 2)).astype(np.float32)
    save_nifti(vol, AFFINE, tmp_path / "t1t2.nii.gz")
    v = load_nifti(tmp_path / "t1t2.nii.gz")
    assert v.data.shape == (6, 7, 8, 2) and v.n_channels == 2 and not v.is_label_map
    (tmp_path / "bad.nii.gz").write_bytes(gzip.compress(b"garbage" * 10))
    with pytest.raises(BloodcellInputError, match="bad.nii.gz: cannot read NIfTI"):
        load_nifti(tmp_path / "bad.nii.gz")
    with pytest.raises(BloodcellInputError, match="already exists"):
        save_nifti(vol, AFFINE, tmp_path / "t1t2.nii.gz")
