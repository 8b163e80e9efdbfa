"""Every classifier architecture and training mode learns on tiny synthetic crops, saves and reloads; the SVM and
the gradient-boosting screen fit and predict."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_bloodcell.core.datasets.classification import load_samples
from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.inference.classify import (
    classify_crops,
    load_classifier,
    margins,
)
from napari_bloodcell.core.io.images import read_image
from napari_bloodcell.core.models.checkpoints import load_checkpoint
from napari_bloodcell.core.models.classifiers import (
    ARCHITECTURES,
    build_classifier,
    extract_features,
)
from napari_bloodcell.core.progress import drain
from napari_bloodcell.core.training.classification import (
    ClassifierTrainConfig,
    make_optimizer,
    set_train_mode,
    train_classifier,
)
from napari_bloodcell.core.training.feature_svm import fit_feature_svm

from .cells import disc_crops


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    return disc_crops(tmp_path_factory.mktemp("crops"), per_class=6)


def quick(arch: str, data, **kw) -> ClassifierTrainConfig:
    """A few full-batch epochs: VGG16 (no batch norm, dropout 0.5) from scratch needs a small rate."""
    base = {"arch": arch, "data": data, "epochs": 5, "batch": 12, "augment": False, "balance": "none",
            "optimizer": "adam", "lr": 3e-5 if arch == "vgg16" else 1e-4, "val_fraction": 0.3,
            "input_size": {"inception_v3": 75, "vgg16": 32}.get(arch, 64)}
    base.update(kw)
    return ClassifierTrainConfig(**base)


DEEPER = ("resnet50", "resnet101", "resnet152", "vgg16")
"""Networks checked to build, take an optimiser step and predict, without the training run and checkpoint round
trip (which are the same code for every architecture and shown on the others): the ResNets share resnet18's
builder, and VGG16's 138 M parameters made its five epochs and checkpoint 46-58 s of the suite (it learns in the
WBC benchmark, docs/benchmarks.md)."""


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a not in DEEPER])
def test_each_architecture_learns_saves_and_reloads(arch, crops, tmp_path):
    out = tmp_path / f"{arch}.pt"
    result = drain(train_classifier(quick(arch, crops, out=out)))
    losses = [h["train_loss"] for h in result["history"]]
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    ckpt = load_checkpoint(out, expect="napari-bloodcell/classifier")  # weights_only=True inside
    assert ckpt["arch"] == arch and ckpt["classes"] == ["blue", "green", "red"] and ckpt["head"] == "softmax"
    pred = load_classifier(out, "cpu")
    images = [read_image(p) for p in sorted(crops.glob("red/*.png"))[:3]]
    first = drain(classify_crops(pred, images))
    again = drain(classify_crops(load_classifier(out, "cpu"), images))
    np.testing.assert_allclose(first.scores, again.scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(first.probabilities.sum(1), 1.0, atol=1e-6)
    assert first.margin.shape == (3,) and np.all((first.margin >= 0) & (first.margin <= 1))


@pytest.mark.parametrize("arch", DEEPER)
def test_the_deeper_architectures_build_step_and_predict(arch):
    torch.manual_seed(0)
    size = 32 if arch == "vgg16" else 64
    model = build_classifier(arch, ["blue", "green", "red"], input_size=size)
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x, y = torch.rand(4, 3, size, size), torch.tensor([0, 1, 2, 0])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (4, 3) and torch.isfinite(out).all()


def test_inception_v3_trains_its_auxiliary_head_at_299():
    model = build_classifier("inception_v3", ["a", "b"], input_size=299)
    model.train()
    logits, aux = model(torch.rand(2, 3, 299, 299))
    assert logits.shape == aux.shape == (2, 2)
    model.eval()
    assert model(torch.rand(1, 3, 299, 299)).shape == (1, 2)
    assert "AuxLogits.fc" in ARCHITECTURES["inception_v3"].head_modules


def test_densenet_has_the_thesis_concat_pool_head():
    model = build_classifier("densenet121", ["a", "b", "c"])
    kinds = [type(m).__name__ for m in model.net.head]
    assert kinds == ["BatchNorm1d", "Dropout", "Linear", "ReLU", "BatchNorm1d", "Dropout", "Linear"]
    assert model.net.head[0].num_features == 2048  # 1024 average + 1024 max


def test_last_layer_mode_freezes_the_body_and_its_batch_norm():
    model = build_classifier("resnet50", ["a", "b"])
    cfg = ClassifierTrainConfig(mode="last")
    opt = make_optimizer(model, cfg, 1e-3)
    assert all(not p.requires_grad for p in model.body_parameters())
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in model.head_parameters()}
    set_train_mode(model, "last")
    assert not model.net.bn1.training and model.net.fc.training
    before = model.net.layer1[0].conv1.weight.detach().clone()
    running = model.net.bn1.running_mean.clone()
    loss = torch.nn.functional.cross_entropy(model(torch.rand(4, 3, 64, 64)), torch.tensor([0, 1, 0, 1]))
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.equal(model.net.layer1[0].conv1.weight, before)
    assert torch.equal(model.net.bn1.running_mean, running)


def test_discriminative_rates_and_the_papers_optimisers():
    model = build_classifier("densenet121", ["a", "b"])
    opt = make_optimizer(model, ClassifierTrainConfig(mode="discriminative", optimizer="adam"), 1e-2)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4, 1e-3, 1e-2])
    rms = make_optimizer(model, ClassifierTrainConfig(optimizer="rmsprop"), 1e-4)
    assert isinstance(rms, torch.optim.RMSprop) and rms.defaults["alpha"] == 0.9
    sgd = make_optimizer(model, ClassifierTrainConfig(optimizer="sgd"), 1e-3)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]


@pytest.mark.parametrize("arch,mode,balance", [("resnet50", "last", "sampler"), ("densenet121", "last", "weights"),
                                               ("resnet50", "discriminative", "weights")])
def test_modes_and_balancing_train(arch, mode, balance, crops):
    result = drain(train_classifier(quick(arch, crops, mode=mode, balance=balance)))
    losses = [h["train_loss"] for h in result["history"]]
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses


def test_early_stopping_on_validation_loss(crops):
    events = []
    result = drain(train_classifier(quick("googlenet", crops, epochs=30, patience=2, lr=0.5, optimizer="sgd")),
                   events.append)
    stops = [e for e in events if e.kind == "stopped"]
    assert stops and len(result["history"]) < 30
    best = min(result["history"], key=lambda h: h["val_loss"])
    assert result["best_epoch"] == best["epoch"]


def test_feature_svm_fits_predicts_and_reloads(crops, tmp_path):
    out = tmp_path / "svm.pt"
    result = drain(fit_feature_svm(quick("vgg16", crops, out=out)))
    assert result["feature_size"] == 4096 and result["layer"] == "fc7"
    assert result["report"]["accuracy"]["value"] >= 0.8  # three colours are easy even for random features
    pred = load_classifier(out, "cpu")
    assert pred.head == "svm" and pred.feature_layer == "fc7"
    images = [read_image(p) for p in sorted(crops.glob("*/*_00.png"))]
    res = drain(classify_crops(pred, images))
    feats = extract_features(pred.model, torch.stack([torch.nn.functional.interpolate(
        torch.from_numpy(i.copy()).permute(2, 0, 1)[None].float() / 255, size=(32, 32), mode="bilinear",
        antialias=True)[0] for i in images]), "fc7").numpy()
    np.testing.assert_allclose(res.scores, pred.svm.decision(feats), rtol=1e-3, atol=1e-3)


def test_multilabel_head_and_abnormal_screen(tmp_path):
    folder = disc_crops(tmp_path / "flags", per_class=8, flags=True)
    out = tmp_path / "ml.pt"
    cfg = quick("resnet50", folder, out=out, multilabel=True, screen_normal=["large"], val_fraction=0.4)
    result = drain(train_classifier(cfg))
    assert result["classes"] == ["large", "warm"]
    losses = [h["train_loss"] for h in result["history"]]
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    assert "exact_match" in result["report"] and set(result["report"]["per_label"]) == {"large", "warm"}
    assert 0 <= result["report"]["screen"]["accuracy"]["value"] <= 1
    pred = load_classifier(out, "cpu")
    assert pred.multilabel and pred.screen is not None
    res = drain(classify_crops(pred, [read_image(p) for p in sorted(folder.glob("red/*.png"))[:4]]))
    assert res.abnormal.shape == (4,) and all(set(f) <= {"large", "warm"} for f in res.flags)
    np.testing.assert_allclose(res.margin, np.abs(2 * res.probabilities - 1).min(1))


def test_margins_single_and_multi_label():
    p = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    np.testing.assert_allclose(margins(p, False), [0.5, 0.05])
    np.testing.assert_allclose(margins(np.array([[0.9, 0.45]]), True), [0.1])


def test_bad_requests_say_what_is_allowed(crops, tmp_path):
    with pytest.raises(BloodcellInputError, match="choose one of"):
        build_classifier("resnet5", ["a", "b"])
    with pytest.raises(BloodcellInputError, match="at least 75"):
        build_classifier("inception_v3", ["a", "b"], input_size=64)
    with pytest.raises(BloodcellInputError, match="mode must be one of"):
        drain(train_classifier(dataclasses.replace(quick("resnet50", crops), mode="half")))
    out = tmp_path / "exists.pt"
    out.write_bytes(b"x")
    with pytest.raises(BloodcellInputError, match="refusing to overwrite"):
        drain(train_classifier(quick("resnet50", crops, out=out)))
    assert out.read_bytes() == b"x"
    with pytest.raises(BloodcellInputError, match="not a loadable PyTorch checkpoint"):
        load_classifier(out)
    torch.save({"format": "napari-bloodcell/detector", "arch": "yolov3"}, tmp_path / "detector.pt")
    with pytest.raises(BloodcellInputError, match="not a napari-bloodcell/classifier checkpoint"):
        load_classifier(tmp_path / "detector.pt")


def test_crop_folder_groups_keep_files_apart(crops):
    sset = load_samples(crops)
    assert sset.classes == ["blue", "green", "red"] and len(set(sset.groups())) == len(sset)
