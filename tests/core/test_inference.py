"""Tiled detection: the grid partitions the field, border cells are reported once, Cancel stops at a tile."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.inference.detect import (
    ClassicalPredictor, detect_array, detect_files, expand_inputs, load_predictor, tile_grid,
)
from napari_bloodcell.core.io.formats import read_annotations
from napari_bloodcell.core.metrics import detection_report
from napari_bloodcell.core.progress import drain


@dataclasses.dataclass
class OraclePredictor:
    """Knows the true cells of a big field and reports those lying wholly inside each tile, as a detector would."""

    boxes: np.ndarray
    field: np.ndarray
    classes: list = dataclasses.field(default_factory=lambda: ["cell"])
    model_id: str = "oracle"
    native_size: int | None = 512
    batch_size: int = 3
    calls: int = 0


def test_tile_grid_partitions_the_axis():
    for length, tile, overlap in [(3000, 1024, 256), (4000, 512, 128), (700, 1024, 256), (1025, 1024, 10)]:
        grid = tile_grid(length, tile, overlap)
        assert grid[0][0] == 0 and grid[-1][1] == length
        assert all(e - s == min(tile, length) for s, e, _, _ in grid)
        owned = [(a, b) for _, _, a, b in grid]
        assert owned[0][0] == 0 and owned[-1][1] == length
        assert all(owned[i][1] == owned[i + 1][0] for i in range(len(owned) - 1))
        assert all(s <= a and b <= e for s, e, a, b in grid)


def test_tiling_reports_every_cell_once(monkeypatch):
    rng = np.random.default_rng(0)
    h, w = 3000, 4000
    grid = np.stack(np.meshgrid(np.arange(75, w - 75, 150), np.arange(75, h - 75, 150)), -1).reshape(-1, 2)
    centres = grid + rng.uniform(-10, 10, grid.shape)  # cells on a jittered grid: touching but never overlapping
    radius = rng.uniform(20, 60, size=(len(grid), 1))
    boxes = np.concatenate([centres - radius, centres + radius], 1)
    field = np.zeros((h, w, 3), dtype=np.uint8)
    oracle = OraclePredictor(boxes, field)

    def predict(tiles, score, nms_iou):  # tiles are views: recover each one's offset from the array interface
        out = []
        for tile in tiles:
            oracle.calls += 1
            offset = (tile.__array_interface__["data"][0] - field.__array_interface__["data"][0]) // 3
            oy, ox = divmod(offset, w)
            th, tw = tile.shape[:2]
            b = boxes - [ox, oy, ox, oy]
            inside = (b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= tw) & (b[:, 3] <= th)
            out.append((b[inside], np.zeros(inside.sum(), dtype=np.int64), np.full(inside.sum(), 0.9)))
        return out

    oracle.predict = predict
    monkeypatch.setattr("napari_bloodcell.core.inference.detect.as_rgb", lambda image: image)
    progress = []
    job = detect_array(oracle, field, score=0.5, nms_iou=0.5, tile=512, overlap=160)
    while True:
        try:
            progress.append(next(job))
        except StopIteration as stop:
            found, labels, scores = stop.value
            break
    assert progress[-1].step == progress[-1].total == oracle.calls > 1
    assert len(found) == len(boxes)  # every cell once: none lost on a border, none duplicated
    assert np.allclose(np.sort(found, 0), np.sort(boxes, 0))


def test_cancel_stops_at_the_next_tile():
    predictor = ClassicalPredictor()
    image = np.full((600, 600, 3), 230, dtype=np.uint8)
    job = detect_array(predictor, image, tile=128, overlap=32)
    first = next(job)
    assert (first.step, first.total) == (1, 36)
    job.close()  # what napari's worker.quit() does
    with pytest.raises(StopIteration):
        next(job)


def test_classical_detector_on_the_synthetic_smear(sample_data):
    gt = read_annotations(sample_data / "smear" / "annotations.json")
    pred = drain(detect_files(ClassicalPredictor(), [r.path for r in gt.images], score=0.05))
    assert pred.classes == ["WBC", "RBC", "Platelets"]
    rec = pred.images[0]
    assert set(rec.sources) == {"classical"} and set(rec.reviews) == {"unreviewed"}
    assert pred.extra["info"]["ms_per_image"] > 0
    merged = read_annotations(sample_data / "smear" / "annotations.json")
    names = ["WBC" if c not in ("RBC", "Platelets") else c for c in merged.classes]
    from napari_bloodcell.core.io.records import AnnotationSet, ImageRecord

    gt3 = AnnotationSet(["WBC", "RBC", "Platelets"], [
        ImageRecord(r.file_name, r.width, r.height, r.boxes, np.array([["WBC", "RBC", "Platelets"].index(names[i])
                                                                        for i in r.labels], dtype=np.int64))
        for r in merged.images])
    report = detection_report(gt3, pred)
    # every white cell of the synthetic smears is found and named (nuclear stain), most red cells are boxed
    assert report["per_class"]["WBC"]["AP50"] > 0.8, report["per_class"]
    assert report["per_class"]["RBC"]["AP50"] > 0.3, report["per_class"]


def test_inputs_and_models_are_checked(tmp_path, sample_data):
    with pytest.raises(BloodcellInputError, match="architecture with no trained weights"):
        load_predictor("ssd300_vgg16")
    with pytest.raises(BloodcellInputError, match="neither 'auto', 'bundled', 'classical' nor"):
        load_predictor(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BloodcellInputError, match="not a loadable PyTorch checkpoint"):
        load_predictor(tmp_path / "bad.pt")
    with pytest.raises(BloodcellInputError, match="holds no images"):
        expand_inputs([tmp_path])
    assert len(expand_inputs([sample_data / "smear"])) == 2  # finds JPEGImages/
    with pytest.raises(BloodcellInputError, match="shape"):
        drain(detect_array(ClassicalPredictor(), np.zeros((4, 5, 6, 7))))
