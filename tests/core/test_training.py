"""The training engine's contract, for all three tasks: typed progress, a slim best checkpoint, Cancel leaving a
resumable ``.last.pt`` that says where it stopped, and a resumed run ending exactly where an uninterrupted one does."""

from __future__ import annotations

import pytest
import torch

from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.progress import Progress, drain
from napari_bloodcell.core.training.classification import ClassifierTrainConfig, train_classifier
from napari_bloodcell.core.training.detection import DetectorTrainConfig, last_path, train_detector
from napari_bloodcell.core.training.segmentation import SegmenterTrainConfig, train_segmenter

from .cells import disc_crops
from .volumes import TINY, write_cases


def detector(sample_data, out, **kw):
    data = sample_data / "smear" / "annotations.json"
    base = dict(arch="ssdlite320_mobilenet_v3_large", data=data, val=data, out=out, epochs=2, batch=2,
                optimizer="adamw", lr=1e-3, max_iters_per_epoch=1, command="pytest")
    base.update(kw)
    return DetectorTrainConfig(**base), train_detector


def classifier(crops, out, **kw):
    base = dict(arch="resnet50", data=crops, out=out, epochs=2, batch=4, augment=True, balance="sampler",
                optimizer="adam", lr=1e-3, val_fraction=0.3, input_size=32, max_iters_per_epoch=1, patience=99)
    base.update(kw)
    return ClassifierTrainConfig(**base), train_classifier


def segmenter(volumes, out, **kw):
    base = dict(data=volumes, out=out, patch=(16, 16, 16), val_patch=(32, 32, 32), batch=2, arch_args=dict(TINY),
                device="cpu", iterations=4, val_every=2, lr=3e-3)
    if "epochs" in kw:
        kw["iterations"] = 2 * kw.pop("epochs")
    base.update(kw)
    return SegmenterTrainConfig(**base), train_segmenter


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    return disc_crops(tmp_path_factory.mktemp("crops"), per_class=6)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    return write_cases(tmp_path_factory.mktemp("volumes"), 4)


def data_for(task, sample_data, crops, volumes):
    return {"detector": (detector, sample_data), "classifier": (classifier, crops),
            "segmenter": (segmenter, volumes)}[task]


TASKS = ("detector", "classifier", "segmenter")


@pytest.mark.parametrize("task", TASKS)
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(task, sample_data, crops, volumes, tmp_path,
                                                              monkeypatch):
    from napari_bloodcell.core.training import engine

    # the resume state is written at every round boundary here: on a loaded machine a first write over a second
    # would otherwise (rightly) skip the next one, and the cut run below would resume from round 0 (the policy
    # has its own test, test_a_state_slow_to_write_is_not_rewritten_every_round)
    monkeypatch.setattr(engine, "LAST_WRITE_FLOOR_S", 1e9)
    make, data = data_for(task, sample_data, crops, volumes)
    whole_out = tmp_path / "whole.pt"
    cfg, train = make(data, whole_out, epochs=2)
    events = []
    drain(train(cfg), events.append)
    assert all(isinstance(e, Progress) for e in events)
    kinds = [e.kind for e in events if e.kind in ("train", "val")]
    assert kinds.count("val") == 2 and kinds[-1] == "val"
    assert all(e.eta_s is not None and e.eta_s >= 0 and "loss" in e.metrics for e in events if e.kind == "train")
    best = torch.load(whole_out, weights_only=True)  # slim: weights, config and metrics; no optimiser state
    assert "model" in best and not {"optimizer", "scheduler", "scaler", "engine"} & set(best)
    assert not last_path(whole_out).exists()  # the resume state goes when the run completes
    with pytest.raises(BloodcellInputError, match="nothing to resume"):
        drain(train(make(data, whole_out, epochs=3, resume=True)[0]))
    with pytest.raises(BloodcellInputError, match="already exists"):
        drain(train(make(data, whole_out, epochs=2)[0]))

    cut_out = tmp_path / "cut.pt"
    cfg, train = make(data, cut_out, epochs=2)
    job = train(cfg)
    vals = 0
    for event in job:
        vals += event.kind == "val"
        if vals == 1 and event.kind == "train":  # one iteration into the second round
            break
    job.close()  # Cancel
    state = torch.load(last_path(cut_out), weights_only=True)
    run = state["engine"]
    assert run["stopped"] == "cancelled" and run["round"] == 1 and len(run["history"]) == 1
    assert next(v for k, v in run.items() if k.startswith("resumes_at_")) == 2
    assert "optimizer" in state

    cfg, train = make(data, cut_out, epochs=2, resume=True, keep_last=True)
    resumed = drain(train(cfg))
    assert len(resumed["history"]) == 2 and last_path(cut_out).exists()  # kept on request
    a, b = torch.load(whole_out, weights_only=True), torch.load(cut_out, weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_detector_checkpoint_contents_and_refusals(sample_data, tmp_path):
    out = tmp_path / "det.pt"
    cfg, _ = detector(sample_data, out)
    result = drain(train_detector(cfg))
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["format"] == "napari-bloodcell/detector" and ckpt["arch"] == "ssdlite320_mobilenet_v3_large"
    assert ckpt["classes"] == ["RBC", "Neutrophil", "Eosinophil", "Lymphocyte", "Monocyte", "Platelets"]
    assert ckpt["initial_weights"] == "none" and ckpt["command"] == "pytest"
    assert len(ckpt["data_hash"]) == 16 and "mAP50" in ckpt["val_metrics"] and ckpt["image_size"] == 640
    assert result["best"]["mAP50"] == max(h["mAP50"] for h in result["history"])
    assert ckpt["epoch"] == result["best"]["epoch"]

    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"mine")
    with pytest.raises(BloodcellInputError, match="already exists"):
        drain(train_detector(detector(sample_data, mine)[0]))
    assert mine.read_bytes() == b"mine"
    with pytest.raises(BloodcellInputError, match="optimizer"):
        drain(train_detector(detector(sample_data, tmp_path / "x.pt", optimizer="rmsprop")[0]))
    with pytest.raises(BloodcellInputError, match="leaves 2 training and 0 validation"):
        drain(train_detector(detector(sample_data, tmp_path / "y.pt", val=None, val_fraction=0.01)[0]))


def test_a_diverging_run_stops_with_a_message_and_keeps_only_sound_weights(sample_data, tmp_path):
    out = tmp_path / "z.pt"
    with pytest.raises(BloodcellInputError, match="diverged"):
        drain(train_detector(detector(sample_data, out, lr=1e12, optimizer="sgd", epochs=3, max_iters_per_epoch=3,
                                      warmup_iters=1)[0]))
    state = torch.load(last_path(out), weights_only=True)  # the state before the blow-up, to resume with a lower lr
    assert state["engine"]["round"] == len(state["engine"]["history"])
    # a best checkpoint exists exactly when a round finished before the blow-up (on this CPU: epoch 1 of 3)
    assert out.exists() == (state["engine"]["round"] >= 1)
    for path in [p for p in (out, last_path(out)) if p.exists()]:
        weights = torch.load(path, weights_only=True)["model"]
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_classifier_early_stop_is_an_event_and_the_best_epoch_is_kept(crops, tmp_path):
    cfg, _ = classifier(crops, tmp_path / "c.pt", epochs=6, patience=1, lr=1e-1, optimizer="sgd")
    events = []
    result = drain(train_classifier(cfg), events.append)
    stops = [e for e in events if e.kind == "stopped"]
    losses = [h["val_loss"] for h in result["history"]]
    if stops:  # a rate this high stops improving quickly; when it did, the run ended there
        assert len(result["history"]) < 6 and "early stop" in stops[0].message
    assert result["best_epoch"] == 1 + losses.index(min(losses))
    assert torch.load(tmp_path / "c.pt", weights_only=True)["epoch"] == result["best_epoch"]


def test_a_state_slow_to_write_is_not_rewritten_every_round(crops, tmp_path, monkeypatch):
    """VGG16's 1.6 GB resume state took 9 s a write after every 2-s epoch: above the floor, the engine keeps the
    writing to a share of the run; the state it keeps still resumes, and keep_last still gets the final one."""
    from napari_bloodcell.core.models.checkpoints import safe_torch_load
    from napari_bloodcell.core.training import engine

    monkeypatch.setattr(engine, "LAST_WRITE_FLOOR_S", 0.0)  # every write counts as slow ...
    monkeypatch.setattr(engine, "LAST_WRITE_SHARE", 1e-9)  # ... and is never due again
    writes = []
    save = engine._save
    monkeypatch.setattr(engine, "_save", lambda ckpt, path: (writes.append(path.name), save(ckpt, path)))
    out = tmp_path / "c.pt"
    cfg, train = classifier(crops, out, epochs=3, keep_last=True)
    drain(train(cfg))
    assert writes.count("c.last.pt") == 2  # before the first round, and the final state for keep_last
    assert safe_torch_load(last_path(out))["engine"]["round"] == 3
    job = train(classifier(crops, tmp_path / "d.pt", epochs=3)[0])
    for event in job:
        if event.kind == "val" and event.step == 2:
            job.close()
            break
    state = safe_torch_load(last_path(tmp_path / "d.pt"))["engine"]
    assert state["round"] == 0 and state["resumes_at_epoch"] == 1 and state["stopped_in_epoch"] == 2
