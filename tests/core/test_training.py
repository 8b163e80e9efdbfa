"""The detector training loop on the shipped synthetic smears: checkpoint contents, resume, refusals, cancel."""

from __future__ import annotations

import pytest
import torch

from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.progress import drain
from napari_bloodcell.core.training.detection import DetectorTrainConfig, last_path, train_detector


def config(sample_data, out, **kw):
    data = sample_data / "smear" / "annotations.json"
    base = dict(arch="ssdlite320_mobilenet_v3_large", data=data, val=data, out=out, epochs=2, batch=2,
                optimizer="adamw", lr=1e-3, max_iters_per_epoch=1, command="pytest")
    base.update(kw)
    return DetectorTrainConfig(**base)


def test_train_writes_a_complete_checkpoint_and_resumes(sample_data, tmp_path):
    out = tmp_path / "det.pt"
    events = []
    result = drain(train_detector(config(sample_data, out)), events.append)
    assert [e["phase"] for e in events] == ["train", "val", "train", "val"]
    assert all(e["eta_s"] >= 0 for e in events if e["phase"] == "train")
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["format"] == "napari-bloodcell/detector" and ckpt["arch"] == "ssdlite320_mobilenet_v3_large"
    assert ckpt["classes"] == ["RBC", "Neutrophil", "Eosinophil", "Lymphocyte", "Monocyte", "Platelets"]
    assert ckpt["initial_weights"] == "none" and ckpt["command"] == "pytest"
    assert len(ckpt["data_hash"]) == 16 and "mAP50" in ckpt["val_metrics"] and ckpt["image_size"] == 640
    assert result["best"]["mAP50"] == max(h["mAP50"] for h in result["history"])
    last = last_path(out)
    assert torch.load(last, weights_only=True)["epoch"] == 1

    resumed = drain(train_detector(config(sample_data, out, epochs=3, resume=last)))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    # the same data gives the same content hash
    assert resumed["data_hash"] == result["data_hash"]


def test_refuses_to_overwrite_and_explains_bad_settings(sample_data, tmp_path):
    out = tmp_path / "det.pt"
    out.write_bytes(b"mine")
    with pytest.raises(BloodcellInputError, match="already exists"):
        drain(train_detector(config(sample_data, out)))
    assert out.read_bytes() == b"mine"
    with pytest.raises(BloodcellInputError, match="optimizer"):
        drain(train_detector(config(sample_data, tmp_path / "x.pt", optimizer="rmsprop")))
    with pytest.raises(BloodcellInputError, match="leaves 2 training and 0 validation"):
        drain(train_detector(config(sample_data, tmp_path / "y.pt", val=None, val_fraction=0.01)))


def test_a_diverging_run_stops_with_a_message(sample_data, tmp_path):
    with pytest.raises(BloodcellInputError, match="diverged"):
        drain(train_detector(config(sample_data, tmp_path / "z.pt", lr=1e12, optimizer="sgd", epochs=3,
                                    max_iters_per_epoch=3, warmup_iters=1)))
    if (tmp_path / "z.pt").exists():  # an epoch that finished before the blow-up was kept: it must be sound
        state = torch.load(tmp_path / "z.pt", weights_only=True)["model"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_cancel_leaves_a_resumable_state(sample_data, tmp_path):
    out = tmp_path / "c.pt"
    job = train_detector(config(sample_data, out, epochs=5))
    for event in job:
        if event["phase"] == "val" and event["epoch"] == 1:
            break
    next(job)  # into epoch 2
    job.close()  # Cancel
    assert torch.load(last_path(out), weights_only=True)["epoch"] >= 0
