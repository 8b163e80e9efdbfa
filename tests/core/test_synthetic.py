import numpy as np
import pytest

from napari_bloodcell.core.boxes import boxes_from_mask
from napari_bloodcell.core.io.coco import read_coco
from napari_bloodcell.core.io.images import read_image
from napari_bloodcell.core.io.nifti import load_nifti
from napari_bloodcell.core.io.voc import read_voc
from napari_bloodcell.core.synthetic.mri import generate_head
from napari_bloodcell.core.synthetic.samples import sample_smear
from napari_bloodcell.core.synthetic.smear import SMEAR_CLASSES, WBC_TYPES, generate_smear


def test_smear_is_reproducible_from_its_seed():
    a, b, c = generate_smear(seed=3), generate_smear(seed=3), generate_smear(seed=4)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a.image, c.image)


def test_smear_content_is_plausible():
    s = sample_smear(0)
    assert s.image.shape == (480, 640, 3) and s.image.dtype == np.uint8
    names = [SMEAR_CLASSES[i] for i in s.labels]
    assert set(WBC_TYPES) <= set(names)  # the first sample shows all four white-cell types
    assert names.count("RBC") >= 15 and "Platelets" in names
    b = s.boxes
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= 640).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= 480).all()
    assert ((b[:, 2] - b[:, 0]) > 0).all()
    widths = b[:, 2] - b[:, 0]
    rbc = np.array(names) == "RBC"
    whole = rbc & ~s.truncated
    assert 70 < np.median(widths[whole]) < 110  # BCCD magnification
    # background is pale, white-cell nuclei are dark purple (blue > green), red cells pink (red > green)
    bg = s.image[s.instance_mask == 0].mean(0)
    assert bg.min() > 200
    rbc_px = np.isin(s.instance_mask, np.flatnonzero(rbc) + 1)
    r, g, _ = s.image[rbc_px].mean(0)
    assert r > g + 40
    for kind in ("Lymphocyte", "Neutrophil"):
        k = names.index(kind)
        px = s.image[s.instance_mask == k + 1]
        dark = px[px.sum(1) < np.percentile(px.sum(1), 20)].mean(0)
        assert dark[2] > dark[1] and dark.sum() < 400


def test_instance_mask_matches_boxes_where_cells_are_not_covered():
    s = generate_smear(seed=11)
    boxes, ids = boxes_from_mask(s.instance_mask)
    by_id = dict(zip(ids.tolist(), boxes.tolist()))
    matched = 0
    for k, box in enumerate(s.boxes):
        visible = by_id.get(k + 1)
        assert visible is not None
        # the visible part lies inside the full box
        assert visible[0] >= box[0] and visible[1] >= box[1] and visible[2] <= box[2] and visible[3] <= box[3]
        matched += visible == box.tolist()
    assert matched >= len(s.boxes) // 3


def test_committed_sample_data_is_what_the_generator_makes(sample_data):
    voc = read_voc(sample_data / "smear")
    coco = read_coco(sample_data / "smear" / "annotations.json")
    for k, (rv, rc) in enumerate(zip(voc.images, coco.images)):
        fresh = sample_smear(k, seed=0)
        np.testing.assert_array_equal(read_image(rv.path), fresh.image)
        np.testing.assert_allclose(rv.boxes, fresh.boxes)
        np.testing.assert_allclose(rc.boxes, fresh.boxes)
        np.testing.assert_array_equal(rc.labels, fresh.labels)
        np.testing.assert_array_equal(read_image(sample_data / "smear" / "masks" / rv.file_name), fresh.instance_mask)
    head = generate_head(seed=0)
    t1 = load_nifti(sample_data / "mri" / "synthetic_t1_000.nii.gz")
    lab = load_nifti(sample_data / "mri" / "synthetic_t1_000_labels.nii.gz")
    np.testing.assert_array_equal(t1.data, head.image)
    np.testing.assert_array_equal(lab.data, head.labels)
    np.testing.assert_allclose(t1.affine, head.affine, atol=1e-5)
    np.testing.assert_allclose(lab.affine, t1.affine)
    assert lab.is_label_map and not t1.is_label_map


def test_head_geometry_and_labels():
    h = generate_head(seed=0)
    assert not np.allclose(h.affine[:3, :3], np.diag(np.diag(h.affine[:3, :3])))  # rotated, not just scaled
    assert set(np.unique(h.labels)) == {0, 1, 2}
    ijk = {v: np.argwhere(h.labels == v).mean(0) for v in (1, 2)}
    world = {v: h.affine[:3, :3] @ c + h.affine[:3, 3] for v, c in ijk.items()}
    assert world[1][0] < 0 < world[2][0]  # label 1 on the left (RAS: negative x), 2 on the right
    # hippocampus intensity is grey-matter-like: between CSF and white matter
    inside = h.image[h.labels > 0].mean()
    assert 400 < inside < 800
    np.testing.assert_array_equal(generate_head(seed=0).image, h.image)
    assert not np.array_equal(generate_head(seed=1).image, h.image)


@pytest.mark.parametrize("bad", [["Basophil"], ["neutrophil"]])
def test_unknown_wbc_type_is_refused(bad):
    with pytest.raises(ValueError, match="unknown white-cell type"):
        generate_smear(wbc_types=bad)
