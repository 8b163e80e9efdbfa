"""The whole review loop, headless, on the shipped synthetic smears: detect -> correct -> export -> retrain ->
register -> roll back; and a process killed during export or retraining leaves everything loadable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_bloodcell.core.annotations import AnnotationTable
from napari_bloodcell.core.export import export_dataset, items_from_project
from napari_bloodcell.core.inference.detect import (
    ClassicalPredictor,
    detect_array,
    detections_record,
)
from napari_bloodcell.core.io.dataset import read_manifest
from napari_bloodcell.core.io.formats import read_annotations
from napari_bloodcell.core.io.images import png_bytes, read_image
from napari_bloodcell.core.models.registry import ModelRegistry
from napari_bloodcell.core.progress import drain
from napari_bloodcell.core.review_project import (
    Autosaver,
    ReviewProject,
    image_digest,
    image_key,
)
from napari_bloodcell.core.training.retrain import RetrainConfig, retrain_detector

ME = "dr.tester"


def detect_into_project(paths: list[Path], project: ReviewProject) -> list[tuple[str, AnnotationTable, Autosaver]]:
    predictor = ClassicalPredictor()
    out = []
    for path in paths:
        image = read_image(path)
        dets = drain(detect_array(predictor, image, score=0.05, nms_iou=0.5, tile=0))
        rec = detections_record(path.name, image.shape[1], image.shape[0], dets, predictor.model_id)
        table = AnnotationTable.from_record(rec, list(predictor.classes))
        digest = image_digest(path)
        key = image_key(path.name, digest)
        meta = {"file_name": path.name, "width": image.shape[1], "height": image.shape[0], "path": str(path),
                "digest": digest}
        saver = Autosaver(project, key, table, meta)
        saver.save_now()
        out.append((key, table, saver))
    return out


def smear_copies(sample_data: Path, folder: Path, n: int) -> list[Path]:
    """``n`` distinct fields cut from the shipped smears (distinct content, so distinct dataset images)."""
    sources = sorted((sample_data / "smear" / "JPEGImages").iterdir())
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        img = read_image(sources[k % len(sources)])
        shift = 16 * (k // len(sources))
        field = np.ascontiguousarray(img[shift:, shift:])
        path = folder / f"field_{k:02d}.png"
        path.write_bytes(png_bytes(field))
        paths.append(path)
    return paths


def test_detect_correct_export_retrain_register_rollback(sample_data, tmp_path):
    paths = smear_copies(sample_data, tmp_path / "fields", 2)
    project = ReviewProject(tmp_path / "review")
    reviews = detect_into_project(paths, project)
    (key, table, _), (_, other, _) = reviews
    assert len(table) > 20 and set(table.col("review")) == {"unreviewed"}

    # correct: change classes, add a box, delete a box, undo one change, accept the rest
    queue = table.queue()
    table.set_class(queue[:3], "WBC", by=ME)
    table.set_class(queue[3:5], "Platelets", by=ME)
    table.add([[5, 5, 40, 40]], ["RBC"], by=ME)
    table.delete([queue[5]], by=ME)
    table.set_class([queue[6]], "Platelets", by=ME)
    table.undo()  # the last class change is taken back
    for t in (table, other):
        t.set_review(t.queue(), "accepted", by=ME)
        t.sign(ME)
    restored, _ = project.load(key)  # autosave kept every change
    assert np.array_equal(restored.col("label"), table.col("label")) and restored.signature_valid

    # export: the dataset reloads with exactly the corrected boxes
    items = items_from_project(project.folder)
    result = drain(export_dataset(items, tmp_path / "dataset", by=ME))
    assert result.version == 1 and result.warnings == []
    reloaded = read_annotations(tmp_path / "dataset")
    rec = next(r for r in reloaded.images if r.extra["original_file_name"] == paths[0].name)
    expected = table.to_record(paths[0].name, 0, 0)
    assert np.allclose(rec.boxes, expected.boxes, atol=1e-3)
    assert [reloaded.classes[i] for i in rec.labels] == [table.classes[i] for i in expected.labels]
    assert rec.source_list().count(ME) == 1 and queue[5] not in [a["object_id"] for a in rec.attribute_list()]
    assert table.object_info(queue[6])["review"] == "accepted"  # the undone change left it to be accepted

    # retrain twice: the first model is registered and active; force the second; roll back
    registry = tmp_path / "registry"
    cfg = RetrainConfig(dataset=tmp_path / "dataset", registry=registry, arch="ssdlite320_mobilenet_v3_large",
                        epochs=1, batch=2, lr=1e-3, max_iters_per_epoch=1, by=ME, command="pytest")
    events = []
    first = drain(retrain_detector(cfg), events.append)
    assert first.activated and first.version["id"] == "v0001" and "mAP50" in first.version["metrics"]
    assert {e.kind for e in events} >= {"train", "val", "validate"}
    second = drain(retrain_detector(RetrainConfig(**{**cfg.__dict__, "activate": "always"})))
    reg = ModelRegistry(registry)
    assert second.parent == "v0001" and second.parent_metrics is not None
    assert reg.active()["id"] == "v0002" and reg.get("v0002")["dataset_version"] == 1
    assert reg.rollback(by=ME)["id"] == "v0001" and reg.active()["id"] == "v0001"
    assert not list((registry / ".work").iterdir())


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "napari_bloodcell.cli.main", *args]


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.002)
    return False


def test_killed_export_leaves_the_previous_version_current(sample_data, tmp_path):
    paths = smear_copies(sample_data, tmp_path / "fields", 6)
    project = ReviewProject(tmp_path / "review")
    for _, t, _ in detect_into_project(paths, project):
        t.set_review(t.queue(), "accepted", by=ME)
    dataset = tmp_path / "dataset"
    drain(export_dataset(items_from_project(project.folder)[:1], dataset, by=ME))
    before = (dataset / "dataset.json").read_bytes()

    proc = subprocess.Popen(_cli("export", str(project.folder), "--dataset", str(dataset), "--include-unreviewed",
                                 "--by", ME), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    staging = lambda: any(p.name.endswith(".partial") for p in (dataset / "versions").iterdir())
    caught = _wait_for(staging, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert caught and proc.returncode == -signal.SIGKILL, "the export finished before it could be killed"
    assert (dataset / "dataset.json").read_bytes() == before
    assert len(read_annotations(dataset).images) == 1  # still the first version, complete

    # the next export skips the debris and writes version 2
    result = drain(export_dataset(items_from_project(project.folder), dataset, by=ME, include_unreviewed=True))
    assert result.version == 2 and result.images == 6
    assert read_manifest(dataset)["current"] == 2


@pytest.mark.parametrize("how", ["kill", "cancel"])
def test_killed_or_cancelled_retraining_keeps_the_active_model(sample_data, tmp_path, how):
    paths = smear_copies(sample_data, tmp_path / "fields", 2)
    project = ReviewProject(tmp_path / "review")
    detect_into_project(paths, project)
    dataset, registry = tmp_path / "dataset", tmp_path / "registry"
    drain(export_dataset(items_from_project(project.folder), dataset, by=ME, include_unreviewed=True))
    first = drain(retrain_detector(RetrainConfig(dataset=dataset, registry=registry, epochs=1, batch=2,
                                                 arch="ssdlite320_mobilenet_v3_large", max_iters_per_epoch=1)))
    registry_before = (registry / "registry.json").read_bytes()

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_cli("retrain", "--dataset", str(dataset), "--registry", str(registry), "--epochs", "50",
                                 "--jsonl", "--activate", "always"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()  # the first progress line: training is under way
    assert json.loads(line)["progress"]["kind"] in ("train", "validate"), proc.stderr.read()
    proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
    proc.wait(timeout=60)
    if how == "kill":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130 and "interrupted" in proc.stderr.read()
        assert not list((registry / ".work").iterdir())
    assert (registry / "registry.json").read_bytes() == registry_before
    reg = ModelRegistry(registry)
    assert reg.active()["id"] == first.version["id"] and len(reg.versions()) == 1
