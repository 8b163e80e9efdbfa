import numpy as np
import pytest

from napari_bloodcell.core import boxes as B

RNG = np.random.default_rng(1)
W, H = 640, 480


def random_boxes(n=50, integer=False):
    x1 = RNG.uniform(0, W - 20, n)
    y1 = RNG.uniform(0, H - 20, n)
    x2 = x1 + RNG.uniform(1, 20, n)
    y2 = y1 + RNG.uniform(1, 20, n)
    b = np.stack([x1, y1, x2, y2], 1)
    return np.round(b) if integer else b


def test_as_boxes_validates_shape_and_values():
    assert B.as_boxes([]).shape == (0, 4)
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        B.as_boxes([[1, 2, 3]])
    with pytest.raises(ValueError, match="NaN"):
        B.as_boxes([[0, 0, np.nan, 1]])
    assert B.as_labels([1.0, 2.0]).dtype == np.int64
    with pytest.raises(ValueError, match="integers"):
        B.as_labels([1.5])


def test_coco_round_trip_and_ids():
    b = random_boxes()
    np.testing.assert_allclose(B.xywh_to_xyxy(B.xyxy_to_xywh(b)), b)
    assert B.xyxy_to_xywh([[10, 20, 30, 60]]).tolist() == [[10, 20, 20, 40]]
    labels = np.array([0, 1, 2])
    assert B.labels_to_coco_ids(labels).tolist() == [1, 2, 3]
    np.testing.assert_array_equal(B.coco_ids_to_labels(B.labels_to_coco_ids(labels)), labels)


def test_voc_is_one_based_inclusive():
    # pixels 0..9 (10 pixels) are VOC 1..10
    assert B.xyxy_to_voc([[0, 0, 10, 5]]).tolist() == [[1, 1, 10, 5]]
    assert B.voc_to_xyxy([[1, 1, 10, 5]]).tolist() == [[0, 0, 10, 5]]
    b = random_boxes(integer=True)
    np.testing.assert_array_equal(B.voc_to_xyxy(B.xyxy_to_voc(b)), b)
    v = RNG.integers(1, 400, (30, 4))
    v[:, 2:] += v[:, :2]
    np.testing.assert_array_equal(B.xyxy_to_voc(B.voc_to_xyxy(v)), v)
    # non-integer boxes come back within half a pixel
    f = random_boxes()
    assert np.abs(B.voc_to_xyxy(B.xyxy_to_voc(f)) - f).max() <= 0.5 + 1e-9


def test_yolo_round_trip_and_values():
    b = random_boxes()
    np.testing.assert_allclose(B.yolo_to_xyxy(B.xyxy_to_yolo(b, W, H), W, H), b)
    assert B.xyxy_to_yolo([[0, 0, 640, 480]], W, H).tolist() == [[0.5, 0.5, 1.0, 1.0]]
    with pytest.raises(ValueError, match="positive"):
        B.xyxy_to_yolo(b, 0, H)


def test_napari_corners_round_trip_2d_and_3d():
    b = random_boxes()
    corners = B.xyxy_to_napari(b)
    assert corners.shape == (len(b), 4, 2)
    # (row, col) = (y, x): first corner is top-left
    np.testing.assert_allclose(corners[:, 0], b[:, [1, 0]])
    back, planes = B.napari_to_xyxy(corners)
    assert planes is None
    np.testing.assert_allclose(back, b)
    planes_in = RNG.integers(0, 5, len(b))
    back3, planes_out = B.napari_to_xyxy(list(B.xyxy_to_napari(b, plane=planes_in)))
    np.testing.assert_allclose(back3, b)
    np.testing.assert_array_equal(planes_out, planes_in)


@pytest.mark.parametrize("chain", [("coco", "yolo", "napari", "voc"), ("voc", "napari", "coco", "yolo")])
def test_every_pair_through_a_chain(chain):
    to = {
        "coco": (B.xyxy_to_xywh, B.xywh_to_xyxy),
        "voc": (B.xyxy_to_voc, B.voc_to_xyxy),
        "yolo": (lambda b: B.xyxy_to_yolo(b, W, H), lambda b: B.yolo_to_xyxy(b, W, H)),
        "napari": (B.xyxy_to_napari, lambda c: B.napari_to_xyxy(c)[0]),
    }
    b = random_boxes(integer=True)
    cur = b
    for fmt in chain:
        encode, decode = to[fmt]
        cur = decode(encode(cur))
    np.testing.assert_allclose(cur, b, atol=1e-6)


def test_clip_and_degenerate():
    b = np.array([[-5, -5, 10, 10], [630, 470, 650, 490], [5, 5, 5, 9], [3, 3, 4, 4]], dtype=float)
    c = B.clip_boxes(b, W, H)
    assert c[0].tolist() == [0, 0, 10, 10] and c[1].tolist() == [630, 470, 640, 480]
    assert B.valid_mask(c).tolist() == [True, True, False, True]
    assert B.outside_mask(b, W, H, tolerance=2).tolist() == [True, True, False, False]
    assert B.area([[0, 0, 2, 3]]).tolist() == [6.0]


def test_boxes_from_binary_mask_by_connected_components():
    mask = np.zeros((50, 60), bool)
    mask[5:10, 3:13] = True  # 10 wide, 5 tall
    mask[20:40, 30:35] = True
    mask[45, 50] = True  # a single pixel, dropped by min_area
    boxes, ids = B.boxes_from_mask(mask, min_area=2)
    assert boxes.tolist() == [[3, 5, 13, 10], [30, 20, 35, 40]]
    assert ids.tolist() == [1, 2]
    # diagonal neighbours join under 8-connectivity, not under 4
    diag = np.zeros((5, 5), bool)
    diag[1, 1] = diag[2, 2] = True
    assert len(B.boxes_from_mask(diag)[0]) == 1
    assert len(B.boxes_from_mask(diag, connectivity=1)[0]) == 2


def test_boxes_from_instance_mask_keeps_ids():
    inst = np.zeros((30, 30), np.int32)
    inst[2:5, 2:8] = 7
    inst[10:20, 10:12] = 3
    inst[25:27, 0:2] = 7  # instance 7 has two parts: one box around both
    boxes, ids = B.boxes_from_mask(inst)
    assert ids.tolist() == [3, 7]
    assert boxes.tolist() == [[10, 10, 12, 20], [0, 2, 8, 27]]
    with pytest.raises(ValueError, match="2D"):
        B.boxes_from_mask(np.zeros((2, 2, 2), int))
