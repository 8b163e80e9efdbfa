"""Points into cells: boxes grown from the cell outline, and point-box pairing (napari_bloodcell.core.point_cells)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk

from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.point_cells import (
    cells_from_points,
    foreground_mask,
    grow_boxes,
    grow_boxes_report,
    pair_points,
)

BACKGROUND = (150, 160, 175)
CELL = (140, 80, 120)
PALE = (165, 135, 155)


def field(discs: list[tuple[float, float, float]], pale: tuple[int, ...] = (), shape=(240, 320),
          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bluish field with purple discs (cx, cy, r); ``pale`` discs get a pale centre like a target cell.
    Returns the image and the true xyxy boxes (pixel edges of each disc's pixels)."""
    rng = np.random.default_rng(seed)
    img = np.empty((*shape, 3), np.float64)
    img[:] = BACKGROUND
    truth = []
    for i, (cx, cy, r) in enumerate(discs):
        rr, cc = disk((cy, cx), r, shape=shape)
        img[rr, cc] = CELL
        if i in pale:
            pr, pc = disk((cy, cx), r * 0.45, shape=shape)
            img[pr, pc] = PALE
        truth.append([cc.min(), rr.min(), cc.max() + 1, rr.max() + 1])
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), np.array(truth, np.float64)


DISCS = [(50, 50, 20), (140, 60, 22), (240, 55, 18), (60, 160, 19), (160, 170, 21), (260, 165, 20)]


def test_grown_boxes_match_isolated_discs():
    img, truth = field(DISCS)
    boxes = grow_boxes(img, np.array([(x, y) for x, y, _ in DISCS]))
    assert boxes.shape == (len(DISCS), 4) and boxes.dtype == np.float64
    np.testing.assert_allclose(boxes, truth, atol=2.5)


def test_points_off_centre_still_find_their_disc():
    img, truth = field(DISCS)
    pts = np.array([(x + 0.4 * r, y - 0.4 * r) for x, y, r in DISCS])
    np.testing.assert_allclose(grow_boxes(img, pts), truth, atol=2.5)


def test_pale_centres_keep_cells_whole():
    img, truth = field(DISCS, pale=(0, 1, 2, 3))
    assert foreground_mask(img)[50, 50]  # the pale centre is filled
    np.testing.assert_allclose(grow_boxes(img, np.array([(x, y) for x, y, _ in DISCS])), truth, atol=2.5)


def test_touching_cells_are_split_at_the_points():
    discs = [(80, 100, 24), (122, 100, 24), (200, 100, 22), (200, 140, 20)]  # two pairs that overlap
    img, truth = field(discs)
    boxes = grow_boxes(img, np.array([(x, y) for x, y, _ in discs]))
    w = boxes[:, 2] - boxes[:, 0]
    assert np.all(w < 52)  # never the pair's joint box
    assert boxes[0, 2] <= 104 and boxes[1, 0] >= 98  # the cut lies near the waist (x = 101)
    np.testing.assert_allclose(boxes[:, [1, 3]][:2], truth[:, [1, 3]][:2], atol=2.5)
    assert boxes[0, 0] == pytest.approx(truth[0, 0], abs=2.5) and boxes[1, 2] == pytest.approx(truth[1, 2], abs=2.5)
    assert boxes[3, 1] >= 112 and boxes[2, 3] <= 128


def test_unclicked_neighbour_does_not_enlarge_a_box():
    discs = [(80, 100, 24), (122, 100, 24)]
    img, truth = field(discs)
    box = grow_boxes(img, np.array([[80.0, 100.0]]))[0]
    assert box[2] <= 106  # the unmarked neighbour got its own seed


def test_point_on_background_gets_a_median_square():
    img, truth = field(DISCS)
    pts = np.array([(x, y) for x, y, _ in DISCS] + [(200.0, 110.0)])
    boxes, fell_back = grow_boxes_report(img, pts)
    assert fell_back.tolist() == [False] * len(DISCS) + [True]
    side = np.median(np.sqrt((truth[:, 2] - truth[:, 0]) * (truth[:, 3] - truth[:, 1])))
    assert boxes[-1, 2] - boxes[-1, 0] == pytest.approx(side, abs=2.5)
    assert (boxes[-1, 0] + boxes[-1, 2]) / 2 == pytest.approx(200.0)


def test_fallback_boxes_are_clipped_and_max_size_bounds_them():
    img, _ = field(DISCS)
    boxes = grow_boxes(img, np.array([[1.0, 1.0], [319.5, 239.5]]), max_size=30)
    assert np.all(boxes >= 0) and np.all(boxes[:, [0, 2]] <= 320) and np.all(boxes[:, [1, 3]] <= 240)
    assert np.all(boxes[:, 2] - boxes[:, 0] <= 30)


def test_bad_points_are_rejected():
    img, _ = field(DISCS)
    assert grow_boxes(img, np.zeros((0, 2))).shape == (0, 4)
    with pytest.raises(BloodcellInputError, match="outside"):
        grow_boxes(img, np.array([[50.0, 50.0], [400.0, 10.0]]))
    with pytest.raises(BloodcellInputError, match="NaN"):
        grow_boxes(img, np.array([[np.nan, 1.0]]))
    with pytest.raises(BloodcellInputError, match="shape"):
        grow_boxes(img, np.array([1.0, 2.0, 3.0]))
    with pytest.raises(BloodcellInputError, match="RGB"):
        grow_boxes(img[..., 0], np.array([[1.0, 2.0]]))
    with pytest.raises(BloodcellInputError, match="max_size"):
        grow_boxes(img, np.array([[1.0, 2.0]]), max_size=-3)
    edge = grow_boxes(img, np.array([[320.0, 240.0], [-0.5, 0.0]]))  # on the far edge: still that pixel
    assert edge.shape == (2, 4)


def test_blank_image_falls_back_everywhere():
    img = np.full((100, 120, 3), 200, np.uint8)
    boxes, fell_back = grow_boxes_report(img, np.array([[50.0, 50.0]]))
    assert fell_back.all() and boxes[0, 2] > boxes[0, 0]


# ------------------------------------------------------------------------------------------------- pairing


def test_pairing_prefers_the_box_a_point_is_central_to():
    boxes = np.array([[0, 0, 40, 40], [20, 0, 60, 40]], float)
    p = pair_points(np.array([[38.0, 20.0]]), boxes)  # inside both, nearer the second's centre
    assert p.box_of_point.tolist() == [1] and p.unpaired_boxes.tolist() == [0]
    assert p.summary() == {"points": 1, "boxes": 2, "paired": 1, "unpaired_points": 0, "unpaired_boxes": 1}


def test_pairing_is_one_to_one_and_maximal():
    boxes = np.array([[0, 0, 40, 40], [20, 0, 60, 40]], float)
    # point 0 is nearer box 1's centre, but only point 0 fits box 0: both pair when it takes box 0
    p = pair_points(np.array([[30.0, 20.0], [55.0, 20.0]]), boxes)
    assert p.box_of_point.tolist() == [0, 1] and len(p.unpaired_points) == 0
    two = pair_points(np.array([[10.0, 10.0], [12.0, 12.0]]), boxes[:1])  # a box with two points
    assert sorted(two.box_of_point.tolist()) == [-1, 0] and len(two.unpaired_points) == 1
    assert two.point_of_box.tolist() in ([0], [1])


def test_pairing_edge_cases():
    boxes = np.array([[0, 0, 10, 10]], float)
    none = pair_points(np.zeros((0, 2)), boxes)
    assert none.box_of_point.shape == (0,) and none.unpaired_boxes.tolist() == [0]
    no_box = pair_points(np.array([[5.0, 5.0]]), np.zeros((0, 4)))
    assert no_box.box_of_point.tolist() == [-1] and no_box.unpaired_points.tolist() == [0]
    outside = pair_points(np.array([[50.0, 50.0]]), boxes)
    assert outside.box_of_point.tolist() == [-1] and outside.summary()["paired"] == 0
    on_edge = pair_points(np.array([[10.0, 10.0]]), boxes)
    assert on_edge.box_of_point.tolist() == [0]
    with pytest.raises(BloodcellInputError):
        pair_points(np.array([[1.0, 1.0]]), np.array([1.0, 2.0, 3.0]))


def test_cells_from_points_pairs_then_grows():
    img, truth = field(DISCS)
    pts = np.array([(x, y) for x, y, _ in DISCS])
    detector = truth[:4] + 1.0  # boxes for the first four cells only, plus a spurious one
    detector = np.vstack([detector, [[290, 200, 310, 220]]])
    cells = cells_from_points(img, pts, np.arange(len(DISCS)), boxes=detector)
    assert cells.source.tolist() == ["paired"] * 4 + ["grown"] * 2
    np.testing.assert_allclose(cells.boxes[:4], detector[:4])
    np.testing.assert_allclose(cells.boxes[4:], truth[4:], atol=2.5)
    assert cells.labels.tolist() == list(range(len(DISCS)))
    assert cells.report["pairing"]["unpaired_boxes"] == 1 and cells.report["unpaired_boxes"] == [4]
    grown = cells_from_points(img, pts, np.zeros(len(DISCS), int))
    assert grown.report["grown"] == len(DISCS) and "pairing" not in grown.report
    with pytest.raises(BloodcellInputError):
        cells_from_points(img, pts, np.zeros(2, int))


# ------------------------------------------------------------------------------------------------- real data


def _chula(shared: Path) -> Path:
    root = shared / "chula_rbc12"
    if not (root / "Dataset").is_dir():
        pytest.skip("../shared/data/chula_rbc12 is not present")
    return root


def test_grown_boxes_on_real_chula_fields(shared_data):
    from napari_bloodcell.core.io.images import read_image

    root = _chula(shared_data)
    stems = sorted(p.stem for p in (root / "Label").glob("*.txt"))[::60][:6]
    plausible = inside = total = 0
    for stem in stems:
        img = read_image(root / "Dataset" / f"{stem}.jpg")
        rows = np.loadtxt(root / "Label" / f"{stem}.txt", ndmin=2)
        pts = rows[:, :2]
        boxes = grow_boxes(img, pts)
        side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        med = np.median(side)
        assert 20 <= med <= 80  # red cells at 1000x in a 640x480 photo are 30-50 px across
        plausible += int(((side > 0.5 * med) & (side < 1.6 * med)).sum())
        inside += int(((pts[:, 0] >= boxes[:, 0]) & (pts[:, 0] <= boxes[:, 2]) & (pts[:, 1] >= boxes[:, 1])
                       & (pts[:, 1] <= boxes[:, 3])).sum())
        total += len(pts)
    assert plausible >= 0.9 * total and inside >= 0.98 * total
