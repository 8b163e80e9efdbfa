"""3D segmentation: cases and splits, patch samplers, the sliding window, metrics, training, transfer, geometry."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from napari_bloodcell.core.datasets.patches import PatchSampler, pad_to, resample_window
from napari_bloodcell.core.datasets.volumes import (
    case_group,
    find_cases,
    label_names_for,
    load_case,
    split_cases,
    zscore,
)
from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.inference.segment3d import (
    gaussian_weight,
    keep_largest_components,
    load_segmenter,
    segment_files,
    sliding_window,
    window_starts,
)
from napari_bloodcell.core.io.nifti import load_nifti, save_nifti
from napari_bloodcell.core.progress import drain
from napari_bloodcell.core.segmentation_metrics import (
    dice,
    hd95,
    label_volumes,
    surface,
)
from napari_bloodcell.core.training.segmentation import (
    SegmenterTrainConfig,
    dice_ce_loss,
    train_segmenter,
)
from tests.core.volumes import TINY, affine_for, blob_case, write_cases

# ------------------------------------------------------------------------------------------ cases and splits


def test_cases_from_msd_flat_and_multichannel_layouts(tmp_path):
    msd = write_cases(tmp_path / "msd", 3)
    cases = find_cases(msd)
    assert [c.name for c in cases] == ["case_001", "case_002", "case_003"]
    assert label_names_for(msd) == {0: "background", 1: "ball", 2: "box"}
    flat = find_cases(write_cases(tmp_path / "flat", 2, layout="flat"))
    assert [(c.name, c.label.name) for c in flat] == [("case_001", "case_001_labels.nii.gz"),
                                                      ("case_002", "case_002_labels.nii.gz")]
    # nnU-Net style modalities: CASE_0000 (T1), CASE_0001 (T2) become two channels, z-scored separately
    multi = tmp_path / "multi"
    image, labels = blob_case(0)
    save_nifti(image, affine_for(), multi / "imagesTr" / "s1_0000.nii.gz")
    save_nifti(1000 * image + 5, affine_for(), multi / "imagesTr" / "s1_0001.nii.gz")
    save_nifti(labels, affine_for(), multi / "labelsTr" / "s1.nii.gz", is_label_map=True)
    (case,) = find_cases(multi)
    img, lab, vol = load_case(case)
    assert img.shape == (2, *labels.shape) and np.allclose(img[0], img[1], atol=1e-4)
    assert np.allclose(img.mean(axis=(1, 2, 3)), 0, atol=1e-5) and np.allclose(img.std(axis=(1, 2, 3)), 1, atol=1e-4)
    assert np.array_equal(lab, labels) and np.allclose(vol.affine, affine_for())
    (tmp_path / "empty").mkdir()
    with pytest.raises(BloodcellInputError, match="no labelled NIfTI cases"):
        find_cases(tmp_path / "empty")


def test_split_keeps_left_right_pairs_together_and_is_stable():
    from napari_bloodcell.core.datasets.volumes import Case

    cases = [Case(f"hippocampus_{n:03d}", []) for n in range(1, 61) if n % 7]
    train, val = split_cases(cases, 0.2, pair_cases=True)
    assert train and val and len(train) + len(val) == len(cases)
    val_groups = {case_group(c.name, True) for c in val}
    assert not val_groups & {case_group(c.name, True) for c in train}
    assert case_group("hippocampus_003", True) == case_group("hippocampus_004", True) != case_group("x_005", True)
    again = split_cases(list(reversed(cases)), 0.2, pair_cases=True)
    assert {c.name for c in again[1]} == {c.name for c in val}
    with pytest.raises(BloodcellInputError, match="no trailing number"):
        case_group("left", True)


def test_zscore_handles_flat_channels():
    img = np.stack([np.full((4, 4, 4), 7.0), np.arange(64, dtype=float).reshape(4, 4, 4)])
    z = zscore(img)
    assert np.all(z[0] == 0) and abs(z[1].mean()) < 1e-6 and abs(z[1].std() - 1) < 1e-5


# ---------------------------------------------------------------------------------------------- samplers


def _sampler(kind: str, augment: bool = False, patch=(8, 8, 8)) -> PatchSampler:
    labels = np.zeros((30, 30, 30), np.int64)
    labels[5:8, 5:8, 5:8] = 1  # 27 voxels
    labels[20:28, 20:28, 20:28] = 2  # 512 voxels
    image = labels[None].astype(np.float32)
    return PatchSampler([image], [labels], 3, patch, kind, augment, seed=1)


def test_weighted_sampler_centres_classes_equally_and_uniform_follows_voxel_counts():
    rates = _sampler("weighted").centre_class_rates(3000)
    assert np.allclose(rates, 1 / 3, atol=0.04)
    rates = _sampler("balanced").centre_class_rates(3000)
    assert np.allclose(rates, 1 / 3, atol=0.04)
    rates = _sampler("uniform").centre_class_rates(3000)
    assert rates[1] < 0.01 and abs(rates[2] - 512 / 27000) < 0.015 and rates[0] > 0.95
    with pytest.raises(BloodcellInputError, match="unknown sampler"):
        _sampler("wieghted")


def test_small_volumes_are_padded_and_patches_match_their_labels():
    labels = np.zeros((5, 6, 7), np.int64)
    labels[2, 3, 3] = 1
    image = np.stack([labels * 10.0 + 1, labels * -3.0])
    sampler = PatchSampler([image.astype(np.float32)], [labels], 2, (8, 8, 8), "balanced", augment=False, seed=0)
    for _ in range(5):
        x, y = sampler.draw()
        assert x.shape == (2, 8, 8, 8) and y.shape == (8, 8, 8)
        assert torch.equal(x[0] == 11.0, y == 1)  # the image and its labels move together
    padded, low = pad_to(image, (8, 8, 8), np.array([1.0, -3.0]))
    assert padded.shape == (2, 8, 8, 8) and low == [1, 1, 0] and padded[0, 0, 0, 0] == 1.0


def test_augmentation_without_rotation_or_scaling_is_an_exact_crop_and_with_them_keeps_labels_aligned():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(12, 12, 12))
    image = labels[None].astype(np.float32) * 100
    x, y = resample_window(image, labels, np.eye(3), (8, 8, 8))
    assert torch.equal(y, torch.from_numpy(labels[2:10, 2:10, 2:10]))
    assert torch.allclose(x[0], torch.from_numpy(image[0, 2:10, 2:10, 2:10]), atol=1e-3)
    sampler = _sampler("weighted", augment=True, patch=(10, 10, 10))
    agree = []
    for _ in range(20):
        x, y = sampler.draw()
        assert x.shape == (1, 10, 10, 10) and set(torch.unique(y).tolist()) <= {0, 1, 2}
        agree.append(float(((x[0] - y.float()).abs() < 0.5).float().mean()))
    assert np.mean(agree) > 0.9  # trilinear intensities and nearest labels still agree away from edges


# ---------------------------------------------------------------------------------------- sliding window


def test_window_starts_cover_every_voxel_and_gaussian_peaks_in_the_middle():
    for size, patch, overlap in [(37, 16, 0.5), (16, 16, 0.5), (10, 16, 0.25), (100, 32, 0.0)]:
        starts = window_starts(size, patch, overlap)
        covered = np.zeros(max(size, patch), bool)
        for s in starts:
            covered[s:s + patch] = True
        assert covered.all() and starts[-1] == max(size, patch) - patch
    w = gaussian_weight((9, 9, 9))
    assert w[4, 4, 4] == 1.0 and w.min() >= 1e-3 and w[0, 0, 0] < w[2, 2, 2]


@pytest.mark.parametrize("blend", ["gaussian", "average"])
def test_sliding_window_equals_whole_volume_for_a_pointwise_model_on_an_odd_shape(blend):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 1), torch.nn.Tanh(), torch.nn.Conv3d(3, 3, 1))
    image = np.random.default_rng(0).normal(size=(2, 37, 23, 41)).astype(np.float32)
    job = sliding_window(model, image, (16, 16, 16), overlap=0.5, blend=blend, batch=3)
    progress, probs = [], None
    while True:
        try:
            progress.append(next(job))
        except StopIteration as stop:
            probs = stop.value
            break
    with torch.no_grad():
        direct = torch.softmax(model(torch.from_numpy(image)[None]), 1)[0].numpy()
    assert probs.shape == (3, 37, 23, 41)
    assert np.allclose(probs, direct, atol=1e-5)
    assert (progress[0].step, progress[0].total) == (0, progress[-1].total)
    assert progress[-1].step == progress[-1].total
    n = np.prod([len(window_starts(s, 16, 0.5)) for s in (37, 23, 41)])
    assert progress[-1].total == n


def test_closing_the_job_stops_it_between_batches():
    """Cancel (``close()``) runs no further window through the network: the batch under way finishes, none after it
    starts, and nothing of the remaining 123 windows is computed on the way out."""
    model = torch.nn.Conv3d(1, 2, 1)
    windows = []
    model.register_forward_hook(lambda module, args, output: windows.append(args[0].shape[0]))
    job = sliding_window(model, np.zeros((1, 40, 40, 40), np.float32), (8, 8, 8), 0.0, "average", 1)
    next(job)  # the count, before any window
    assert windows == []
    next(job)
    next(job)
    assert windows == [1, 1]
    job.close()
    assert windows == [1, 1]
    whole = sliding_window(model, np.zeros((1, 40, 40, 40), np.float32), (8, 8, 8), 0.0, "average", 1)
    for _ in whole:
        pass
    assert len(windows) == 2 + 125  # what closing saved



def test_cancelling_a_segmentation_of_files_keeps_the_finished_cases_and_writes_no_partial_one(tmp_path):
    data = write_cases(tmp_path / "data", 3, shape=(29, 21, 17))
    model = tmp_path / "m.pt"
    _train(tmp_path, data, model, iterations=2, val_every=2)
    first, second = find_cases(data)[:2]
    out = tmp_path / "out"
    job = segment_files([first.images[0], second.images[0]], model, out, device="cpu", patch=(16, 16, 16))
    saved: list[str] = []
    for _ in job:
        saved = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
        if saved:  # the first case is written; the job is now on the second
            break
    next(job)  # a batch of the second case's windows
    job.close()  # Cancel
    assert saved == [f"{first.name}_seg.nii.gz"]
    assert sorted(p.name for p in out.iterdir()) == saved  # no partial label map, no temporary file
    assert nib.load(str(out / saved[0])).shape == (29, 21, 17)

# ---------------------------------------------------------------------------------------------- metrics


def test_dice_and_hd95_match_brute_force_with_anisotropic_spacing():
    rng = np.random.default_rng(3)
    a = np.zeros((12, 10, 9), bool)
    b = np.zeros_like(a)
    a[2:8, 3:7, 2:6] = True
    b[3:9, 2:7, 3:8] = True
    a[rng.integers(0, 12, 4), rng.integers(0, 10, 4), rng.integers(0, 9, 4)] = True
    spacing = (0.8, 1.5, 2.5)
    assert dice(a, b) == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
    pa, pb = (np.argwhere(surface(m)) * spacing for m in (a, b))
    d = cdist(pa, pb)
    expected = np.percentile(np.concatenate([d.min(1), d.min(0)]), 95)
    assert hd95(a, b, spacing) == pytest.approx(expected, abs=1e-9)
    assert hd95(a, a, spacing) == 0.0 and dice(a, a) == 1.0
    assert dice(np.zeros(3), np.zeros(3)) == 1.0 and np.isnan(hd95(a, np.zeros_like(a)))
    vols = label_volumes(np.array([[[0, 1, 1, 2]]]), (0.5, 2.0, 3.0), {1: "anterior"})
    assert vols == [{"label": 1, "name": "anterior", "voxels": 2, "mm3": 6.0},
                    {"label": 2, "name": "label 2", "voxels": 1, "mm3": 3.0}]


def test_dice_ce_loss_is_low_for_confident_correct_logits():
    target = torch.randint(0, 3, (2, 6, 6, 6))
    good = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float() * 20
    assert float(dice_ce_loss(good, target)) < 0.01
    assert float(dice_ce_loss(torch.zeros_like(good), target)) > 1.0


# ------------------------------------------------------------------------------------ training and transfer


def _train(tmp_path, data, out, **kw):
    cfg = SegmenterTrainConfig(data=data, out=out, patch=(16, 16, 16), val_patch=(32, 32, 32), batch=2,
                               arch_args=dict(TINY), device="cpu", seed=0, **kw)
    losses = []
    result = drain(train_segmenter(cfg), lambda e: losses.append(e.metrics["loss"]) if e.kind == "train" else None)
    return result, losses


def test_training_lowers_the_loss_saves_and_resumes(tmp_path):
    data = write_cases(tmp_path / "data", 4)
    out = tmp_path / "seg.pt"
    result, losses = _train(tmp_path, data, out, iterations=60, val_every=30, lr=3e-3, keep_last=True)
    assert np.mean(losses[-10:]) < 0.75 * np.mean(losses[:10])
    assert [h["iteration"] for h in result["history"]] == [30, 60]
    assert set(result["best"]["dice"]) == {"ball", "box"}
    seg = load_segmenter(out)  # loads with weights_only=True
    assert seg.label_values == [0, 1, 2] and seg.label_names[1] == "ball" and seg.patch == (16, 16, 16)
    assert seg.checkpoint["preprocessing"]["normalise"].startswith("zscore")
    assert seg.checkpoint["val_cases"] and not set(seg.checkpoint["val_cases"]) & set(seg.checkpoint["train_cases"])
    with pytest.raises(BloodcellInputError, match="refusing to overwrite"):
        _train(tmp_path, data, out, iterations=2, val_every=1)
    more, _ = _train(tmp_path, data, out, iterations=70, val_every=10, lr=3e-3, resume=True)
    assert more["iterations_run"] == 10 and [h["iteration"] for h in more["history"]][-1] == 70


def test_transfer_replaces_the_classifier_and_frozen_stages_stay_put(tmp_path):
    data = write_cases(tmp_path / "data", 3)
    source = tmp_path / "source.pt"
    _train(tmp_path, data, source, iterations=4, val_every=4)
    # the new task: the ball only (label 1), so the classifier must be replaced (3 -> 2 classes)
    target = tmp_path / "target"
    for case in find_cases(data):
        lab = load_nifti(case.label)
        save_nifti(lab.data == 1, lab.affine, target / "labelsTr" / case.label.name, is_label_map=True)
        (target / "imagesTr").mkdir(parents=True, exist_ok=True)
        (target / "imagesTr" / case.images[0].name).write_bytes(case.images[0].read_bytes())
    out = tmp_path / "transfer.pt"
    result, _ = _train(tmp_path, target, out, iterations=4, val_every=4, init=source, freeze=["conv_0", "res_1"])
    before, after = load_segmenter(source).model.state_dict(), load_segmenter(out).model.state_dict()
    for key, value in after.items():
        if key.startswith(("conv_0.", "res_1.")):
            assert torch.equal(value, before[key]), key
    assert after["conv_2.weight"].shape[0] == 2 and before["conv_2.weight"].shape[0] == 3
    assert not torch.equal(after["res_2.0.body.2.weight"], before["res_2.0.body.2.weight"])
    ckpt = load_segmenter(out).checkpoint
    assert ckpt["frozen"] == ["conv_0", "res_1"] and ckpt["transfer"]["replaced_classifier"]
    assert result["trainable_parameters"] < sum(v.numel() for k, v in after.items() if "running" not in k)


# ------------------------------------------------------------------------------------------------ geometry


def test_segmented_volume_with_a_rotated_affine_and_odd_shape_reloads_on_its_image_grid(tmp_path):
    data = write_cases(tmp_path / "data", 3, shape=(29, 21, 17))
    model = tmp_path / "m.pt"
    _train(tmp_path, data, model, iterations=2, val_every=2)
    volume = find_cases(data)[0].images[0]
    results = drain(segment_files([volume], model, tmp_path / "out", device="cpu", patch=(16, 16, 16),
                                  overlap=0.25))
    written = nib.load(results[0]["output"])
    source = nib.load(str(volume))
    assert written.shape == source.shape == (29, 21, 17)
    assert np.allclose(written.affine, source.affine) and not np.allclose(source.affine, np.diag(np.diag(source.affine)))
    assert written.header.get_intent()[0] == "label" and written.get_data_dtype() == np.uint8
    with pytest.raises(BloodcellInputError, match="would overwrite"):
        drain(segment_files([volume], model, tmp_path / "out", device="cpu"))
    with pytest.raises(BloodcellInputError, match="takes 1 channel"):
        from napari_bloodcell.core.inference.segment3d import segment_array

        drain(segment_array(load_segmenter(model), np.zeros((2, 8, 8, 8))))


def test_every_window_combination_is_used_once():
    starts = list(itertools.product(*[window_starts(s, 8, 0.5) for s in (8, 12, 20)]))
    assert len(starts) == len(set(starts)) == 1 * 2 * 4


def test_largest_component_drops_stray_islands_of_each_label_only():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:8, 2:8, 2:8] = 1  # the organ
    labels[15, 15, 15] = 1  # a stray island, far away
    labels[10:13, 2:5, 2:5] = 2
    labels[2:4, 15:17, 15:17] = 2  # a smaller second piece of label 2
    labels[8, 8, 8] = 1  # touches the organ by a corner: 26-connected, kept
    kept = keep_largest_components(labels)
    assert kept[15, 15, 15] == 0 and kept[8, 8, 8] == 1 and (kept[2:8, 2:8, 2:8] == 1).all()
    assert (kept[10:13, 2:5, 2:5] == 2).all() and not (kept[2:4, 15:17, 15:17] == 2).any()
    organ = np.zeros_like(labels, bool)
    organ[2:8, 2:8, 2:8] = True
    organ[8, 8, 8] = True
    assert hd95(kept == 1, organ) == 0.0 and hd95(labels == 1, organ) == 0.0  # one voxel is under 5% of surface
    assert dice(kept == 1, organ) == 1.0 and dice(labels == 1, organ) < 1.0
