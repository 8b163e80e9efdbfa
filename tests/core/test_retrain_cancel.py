"""The central promise of retraining: a cancelled or failed run registers nothing, leaves the active model as it
was and clears its work folder, for the detector, the classifier and the segmenter.

Written against the public entry points only (``RetrainConfig`` and ``retrain_detector`` /
``retrain_classifier`` / ``retrain_segmenter``) and the generator protocol every job follows: Cancel is
``job.close()`` at a yield, and a failure inside the run is ``job.throw(...)`` at one (what an exception raised by
the training step or the comparison looks like to the retrain around it). Each task's data and models are the
smallest that train: a few synthetic smear fields or blob volumes, one iteration per epoch.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Generator
from pathlib import Path

import pytest

from napari_bloodcell.core.models.registry import ModelRegistry
from napari_bloodcell.core.progress import drain
from napari_bloodcell.core.training.retrain import RetrainConfig, retrain_detector
from napari_bloodcell.core.training.retrain_classifier import retrain_classifier
from napari_bloodcell.core.training.retrain_segmenter import retrain_segmenter

from .cells import exported_fields
from .volumes import TINY, write_cases

TYPES = ["Neutrophil", "Eosinophil", "Lymphocyte", "Monocyte"]
ME = "dr.cancel"
RETRAIN = {"detector": retrain_detector, "classifier": retrain_classifier, "segmenter": retrain_segmenter}


def config(task: str, dataset: Path, registry: Path) -> RetrainConfig:
    common = dict(dataset=dataset, registry=registry, task=task, epochs=1, max_iters_per_epoch=1, device="cpu",
                  by=ME, command="pytest", activate="always")
    if task == "detector":
        return RetrainConfig(**common, arch="ssdlite320_mobilenet_v3_large", batch=2)
    if task == "classifier":
        return RetrainConfig(**common, batch=8, lr=1e-3, val_fraction=0.3)  # classes and size: the parent's
    return RetrainConfig(**common, batch=2, lr=1e-3, val_fraction=0.34)  # window and width: the parent's


def _small_classifier(folder: Path, registry: Path) -> None:
    """A first classifier at 32 px, registered as the active one: a first retrain would train at the
    architecture's 224 px (RetrainConfig has no input size), 10-40 s per run on two CPU cores; its children keep
    the parent's size."""
    from napari_bloodcell.core.training.classification import ClassifierTrainConfig, train_classifier

    out = folder / "first.pt"
    drain(train_classifier(ClassifierTrainConfig(
        arch="googlenet", data=folder / "fields" / "annotations.json", classes=TYPES, box_class="WBC", out=out,
        epochs=1, batch=8, input_size=32, optimizer="adam", lr=1e-3, max_iters_per_epoch=1, device="cpu")))
    ModelRegistry(registry).add(out, "classifier", activate=True, by=ME)


def _volume_dataset(folder: Path) -> Path:
    from napari_bloodcell.core.datasets.volumes import find_cases
    from napari_bloodcell.core.export_volumes import export_segmentation, item_from_files

    cases = find_cases(write_cases(folder / "cases", 3, layout="flat", shape=(20, 18, 16)))
    items = [item_from_files(c.images[0], c.label) for c in cases]
    drain(export_segmentation(items, folder / "dataset", by=ME))
    return folder / "dataset"


def _small_segmenter(folder: Path, registry: Path) -> None:
    """A first segmenter of narrow width (``TINY``), registered as the active one: a first retrain would build the
    full-width network; its children keep the parent's width and window."""
    from napari_bloodcell.core.training.segmentation import SegmenterTrainConfig, train_segmenter

    out = folder / "first.pt"
    drain(train_segmenter(SegmenterTrainConfig(
        data=folder / "cases", out=out, patch=(16, 16, 16), batch=2, arch_args=dict(TINY), device="cpu",
        iterations=1, val_every=1, lr=1e-3)))
    ModelRegistry(registry).add(out, "segmenter", activate=True, by=ME)


@pytest.fixture(scope="module", params=["detector", "classifier", "segmenter"])
def trained(request, tmp_path_factory):
    """A task, its dataset, and a registry with one version of that task, active (the detector's made by a
    completed retrain; the classifier and segmenter registered small, so their retrains take a second or two)."""
    task = request.param
    folder = tmp_path_factory.mktemp(task)
    dataset = _volume_dataset(folder) if task == "segmenter" else exported_fields(folder, by=ME)
    registry = folder / "registry"
    if task == "classifier":
        _small_classifier(folder, registry)
    elif task == "segmenter":
        _small_segmenter(folder, registry)
    else:
        first = drain(RETRAIN[task](config(task, dataset, registry)))
        assert first.activated and first.version["task"] == task
    return task, dataset, registry


@dataclasses.dataclass
class Run:
    """A retrain job on a fresh copy of the registry (one active version), not yet started."""

    job: Generator
    registry: Path
    task: str
    before: bytes
    models: list[str]

    def registered_nothing(self) -> None:
        """The registry and its models are byte for byte as before, and the work folder is empty."""
        assert (self.registry / "registry.json").read_bytes() == self.before
        assert sorted(p.name for p in (self.registry / "models").iterdir()) == self.models
        reg = ModelRegistry(self.registry)
        assert len(reg.versions(self.task)) == 1
        assert reg.active(self.task)["id"] == reg.versions(self.task)[0]["id"]
        work = self.registry / ".work"
        left = sorted(str(p.relative_to(work)) for p in work.rglob("*")) if work.exists() else []
        assert not left, f"the work folder was not cleared: {left}"


@pytest.fixture
def run(trained, tmp_path) -> Run:
    task, dataset, base = trained
    registry = tmp_path / "registry"
    shutil.copytree(base, registry)
    return Run(RETRAIN[task](config(task, dataset, registry)), registry, task,
               (registry / "registry.json").read_bytes(), sorted(p.name for p in (registry / "models").iterdir()))


def _run_until(job, wanted: str) -> list:
    events = []
    for event in job:
        events.append(event)
        if event.kind == wanted:
            return events
    raise AssertionError(f"the retrain finished without a {wanted!r} event: {[e.kind for e in events]}")


def test_cancel_during_training_registers_nothing_and_clears_the_work_folder(run):
    _run_until(run.job, "train")
    work = run.registry / ".work"
    assert work.is_dir() and any(work.iterdir())  # the run is under way in its work folder: clearing it is tested
    run.job.close()  # Cancel
    run.registered_nothing()


def test_a_failure_during_training_registers_nothing_and_clears_the_work_folder(run):
    _run_until(run.job, "train")
    with pytest.raises(RuntimeError, match="simulated failure"):
        run.job.throw(RuntimeError("simulated failure in the training step"))
    run.registered_nothing()


@pytest.mark.parametrize("how", ["cancel", "fail"])
def test_cancel_or_failure_while_scoring_the_active_model_registers_nothing(run, how):
    _run_until(run.job, "compare")
    if how == "cancel":
        run.job.close()
    else:
        with pytest.raises(RuntimeError, match="simulated failure"):
            run.job.throw(RuntimeError("simulated failure while scoring the active model"))
    run.registered_nothing()


def test_a_failure_to_register_registers_nothing_and_clears_the_work_folder(run):
    from napari_bloodcell.core.atomic import folder_lock
    from napari_bloodcell.core.errors import BloodcellInputError

    with folder_lock(run.registry, "the model registry"):  # another process is changing the registry
        with pytest.raises(BloodcellInputError, match="another process"):
            drain(run.job)
    run.registered_nothing()
