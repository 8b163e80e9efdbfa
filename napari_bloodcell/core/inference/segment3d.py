"""Patch-based 3D segmentation: windows over the volume, predictions blended back (NiftyNet's window aggregator).

The network sees ``patch``-sized windows that overlap by ``overlap`` (a fraction of the patch); windows run on the
model's device in batches (mixed precision on CUDA) and their class probabilities are added into a full-size
accumulator on the CPU, weighted by a gaussian centred on the window (``gaussian``: a window's borders, which lack
context, count least) or evenly (``average``). A volume smaller than the patch is padded and cropped back, so the
label map always has the input's shape, and it is saved with the input's affine: it lies on the image voxel for
voxel. Progress is reported per batch of windows; closing the generator (Cancel) stops at the next batch.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..progress import note, relay, step
from ..tasks import TASKS
from ..datasets.patches import pad_to
from ..errors import BloodcellInputError, nearest
from ..models.checkpoints import load_checkpoint

FORMAT = TASKS["segmenter"].format
BLENDS = ("gaussian", "average")


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Window origins along one axis: a step of ``patch × (1 − overlap)``, the last window flush with the end."""
    if size <= patch:
        return [0]
    step = max(1, int(round(patch * (1.0 - overlap))))
    starts = list(range(0, size - patch + 1, step))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def count_windows(shape: tuple[int, ...], patch: tuple[int, ...], overlap: float) -> int:
    return int(np.prod([len(window_starts(max(s, p), p, overlap)) for s, p in zip(shape, patch)]))


def gaussian_weight(patch: tuple[int, int, int], sigma_fraction: float = 0.125) -> np.ndarray:
    """A separable gaussian over the window (σ = patch/8), scaled to peak 1 and kept above 1e-3 at the corners."""
    axes = []
    for n in patch:
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2
        axes.append(np.exp(-0.5 * (x / max(n * sigma_fraction, 1e-6)) ** 2))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return np.maximum(w / w.max(), 1e-3).astype(np.float32)


def check_window_args(patch: tuple[int, ...], overlap: float, blend: str, batch: int) -> None:
    if len(patch) != 3 or min(patch) < 4:
        raise BloodcellInputError(f"patch must be three sizes of at least 4 voxels; got {tuple(patch)}")
    if not 0.0 <= overlap < 1.0:
        raise BloodcellInputError(f"overlap must be at least 0 and below 1 (a fraction of the patch); got {overlap}")
    if blend not in BLENDS:
        raise BloodcellInputError(f"unknown blending {blend!r}{nearest(blend, BLENDS)}; allowed: {', '.join(BLENDS)}")
    if batch < 1:
        raise BloodcellInputError(f"batch must be at least 1; got {batch}")


def sliding_window(model: torch.nn.Module, image: np.ndarray, patch: tuple[int, int, int], overlap: float = 0.5,
                   blend: str = "gaussian", batch: int = 2, device: torch.device | str = "cpu",
                   amp: bool = True) -> Generator[tuple[int, int], None, np.ndarray]:
    """(C, X, Y, Z) normalised image → (K, X, Y, Z) float32 class probabilities; yields (windows done, total)."""
    check_window_args(patch, overlap, blend, batch)
    device = torch.device(device)
    shape = image.shape[1:]
    padded, low = pad_to(image, patch, image.reshape(image.shape[0], -1).min(1))
    starts = list(itertools.product(*[window_starts(s, p, overlap) for s, p in zip(padded.shape[1:], patch)]))
    weight = gaussian_weight(patch) if blend == "gaussian" else np.ones(patch, np.float32)
    accum: np.ndarray | None = None
    norm = np.zeros(padded.shape[1:], np.float32)
    use_amp = amp and device.type == "cuda"
    model.eval()
    total = len(starts)
    yield step(0, total)
    for k in range(0, total, batch):
        chunk = starts[k:k + batch]
        x = torch.from_numpy(np.stack([padded[(slice(None), *_window(s, patch))] for s in chunk])).to(device)
        with torch.no_grad(), torch.autocast(device.type, enabled=use_amp):
            probs = torch.softmax(model(x).float(), dim=1).cpu().numpy()
        if accum is None:
            accum = np.zeros((probs.shape[1], *padded.shape[1:]), np.float32)
        for s, p in zip(chunk, probs):
            sl = _window(s, patch)
            accum[(slice(None), *sl)] += p * weight
            norm[sl] += weight
        yield step(min(k + batch, total), total)
    assert accum is not None
    accum /= norm
    crop = tuple(slice(lo, lo + n) for lo, n in zip(low, shape))
    return accum[(slice(None), *crop)]


def _window(start: tuple[int, ...], patch: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(s, s + p) for s, p in zip(start, patch))


@dataclasses.dataclass
class Segmenter:
    model: torch.nn.Module
    checkpoint: dict[str, Any]
    device: torch.device
    path: Path | None = None

    @property
    def label_values(self) -> list[int]:
        return [int(v) for v in self.checkpoint["label_values"]]

    @property
    def label_names(self) -> dict[int, str]:
        return {int(k): str(v) for k, v in self.checkpoint.get("label_names", {}).items()}

    @property
    def patch(self) -> tuple[int, int, int]:
        return tuple(int(p) for p in self.checkpoint["preprocessing"]["patch"])  # type: ignore[return-value]

    @property
    def in_channels(self) -> int:
        return int(self.checkpoint["arch_args"]["in_channels"])


def build_segmenter_model(arch: str, arch_args: dict[str, Any]) -> torch.nn.Module:
    from ..models.highres3dnet import HighRes3DNet

    if arch != "highres3dnet":
        raise BloodcellInputError(f"unknown segmentation architecture {arch!r}; allowed: highres3dnet")
    args = dict(arch_args)
    for key in ("features", "dilations"):
        if key in args:
            args[key] = tuple(args[key])
    return HighRes3DNet(**args)


def load_segmenter(path: str | Path, device: torch.device | str = "cpu") -> Segmenter:
    ckpt = load_checkpoint(path, expect=FORMAT)
    model = build_segmenter_model(ckpt["arch"], ckpt["arch_args"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise BloodcellInputError(f"weights do not fit {ckpt['arch']}: {str(exc).splitlines()[0]}", path) from None
    device = torch.device(device)
    return Segmenter(model.to(device).eval(), ckpt, device, Path(path))


def keep_largest_components(labels: np.ndarray) -> np.ndarray:
    """Per non-zero label, keep only its largest 26-connected component (the rest becomes background).

    For structures that are one piece (a hippocampus, its head), this removes stray islands far from the organ,
    which barely move Dice but dominate the Hausdorff distance.
    """
    from scipy import ndimage

    out = labels.copy()
    structure = np.ones((3, 3, 3), bool)
    for value in np.unique(labels):
        if value == 0:
            continue
        comps, n = ndimage.label(labels == value, structure=structure)
        if n > 1:
            sizes = np.bincount(comps.ravel())[1:]
            out[(comps > 0) & (comps != 1 + int(np.argmax(sizes)))] = 0
    return out


@dataclasses.dataclass
class SegmentationResult:
    labels: np.ndarray
    """(X, Y, Z) label values (uint8, or uint16 for values above 255)."""
    probabilities: np.ndarray | None
    seconds: float
    windows: int
    warnings: list[str]


def check_volume_shape(shape: tuple[int, ...], path: str | Path | None = None) -> None:
    """The segmenter is 3D: a 2D image (or a single slice) is refused rather than padded into a fake volume."""
    if len(shape) != 3 or min(shape) < 2:
        raise BloodcellInputError(f"is a 2D image (shape {'x'.join(str(n) for n in shape)}); the segmenter is 3D and "
                                  "needs a volume with more than one slice along every axis", path)


def _non_finite_note(image: np.ndarray) -> tuple[np.ndarray | None, list[str]]:
    """Where the image has no data (NaN/inf in any channel), and the warning that says how it is treated; a
    refusal when a channel holds no finite voxel at all (nothing to segment)."""
    from ..datasets.volumes import non_finite_mask

    mask = non_finite_mask(image)
    if mask is None:
        return None, []
    empty = [c for c in range(image.shape[0]) if not np.isfinite(image[c]).any()]
    if empty:
        raise BloodcellInputError(f"channel {empty[0]} holds no finite voxel (every one is NaN or infinite); "
                                  "nothing to segment")
    n = int(mask.sum())
    return mask, [f"{n:,} voxel(s) ({n / mask.size:.1%}) are NaN or infinite: they were normalised as the darkest "
                  "intensity and are background (0) in the label map"]


def segment_array(seg: Segmenter, image: np.ndarray, spacing: tuple[float, ...] | None = None,
                  patch: tuple[int, int, int] | None = None, overlap: float = 0.5, blend: str = "gaussian",
                  batch: int = 2, amp: bool = True, keep_probabilities: bool = False, largest_only: bool = False
                  ) -> Generator[tuple[int, int], None, SegmentationResult]:
    """Segment a raw (C, X, Y, Z) or (X, Y, Z) image: z-score it as in training, slide, take the argmax.

    NaN/inf voxels (common outside the head in MRI) are not refused: z-scoring gives them the darkest value and the
    label map sets them to background, with a warning counting them."""
    from ..datasets.volumes import zscore

    image = np.asarray(image)
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] != seg.in_channels:
        raise BloodcellInputError(f"the model takes {seg.in_channels} channel(s) (C, X, Y, Z); got an image of "
                                  f"shape {image.shape}")
    check_volume_shape(image.shape[1:])
    if image.dtype.kind not in "biuf":
        raise BloodcellInputError(f"the image holds {image.dtype} values; segmentation needs real intensities")
    no_data, warnings = _non_finite_note(image)
    trained = seg.checkpoint.get("preprocessing", {}).get("spacing")
    if spacing is not None and trained:
        ratio = np.asarray(spacing, float) / np.asarray(trained, float)
        if np.any(np.abs(ratio - 1) > 0.25):
            warnings.append(f"voxel spacing {tuple(round(s, 2) for s in spacing)} mm differs from the training data's "
                            f"{tuple(round(s, 2) for s in trained)} mm by more than 25%; resample for best results")
    start = time.perf_counter()
    probs = yield from sliding_window(seg.model, zscore(image), patch or seg.patch, overlap, blend, batch,
                                      seg.device, amp)
    values = np.asarray(seg.label_values)
    dtype = np.uint8 if values.max() <= 255 else np.uint16
    labels = values[np.argmax(probs, axis=0)].astype(dtype)
    if no_data is not None:
        labels[no_data] = 0
    if largest_only:
        labels = keep_largest_components(labels)
    return SegmentationResult(labels, probs if keep_probabilities else None, time.perf_counter() - start,
                              count_windows(image.shape[1:], patch or seg.patch, overlap), warnings)


def _check_output_folder(out: Path) -> None:
    """The output folder (or the nearest folder that exists above it) must be a writable folder: checked before
    the job, not discovered when the first label map is saved."""
    import os

    probe = out
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise BloodcellInputError("is a file, not a folder; choose another --out", probe)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise BloodcellInputError("folder is not writable; choose another --out", probe)


def plan_segmentation(inputs: list[str | Path], out: Path, suffix: str,
                      may_exist: Callable[[Any, Path], bool] | None = None
                      ) -> tuple[list[Any], list[Path], list[tuple[Path, int]]]:
    """The cases of ``inputs``, their label-map paths in ``out`` and each case's (first file, channels), with
    everything that could stop a job half-way checked first, before any model is loaded: outputs that exist
    (never overwritten, unless ``may_exist`` says this job made them), two cases with one output, the output
    folder, and every case's header (geometry that can be saved, voxel type, size, 3D). The channel count is
    checked against the model by :func:`check_channels`."""
    from ..datasets.volumes import Case, find_cases, probe_case
    from ..io.nifti import check_savable, is_nifti_path, nifti_stem
    from ..untrusted import regular_file

    cases: list[Case] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            cases.extend(find_cases(p, require_labels=False))
        elif is_nifti_path(p):
            cases.append(Case(nifti_stem(p), [regular_file(p)]))  # a FIFO named x.nii would block the reader
        else:
            raise BloodcellInputError("not a NIfTI file or a folder of cases (allowed: .nii, .nii.gz)", p)
    targets = [out / f"{c.name}{suffix}.nii.gz" for c in cases]
    clash = [t for c, t in zip(cases, targets) if t.exists() and (may_exist is None or not may_exist(c, t))]
    if clash:
        raise BloodcellInputError(f"would overwrite {len(clash)} existing file(s), e.g. {clash[0].name}; choose a new "
                                  "--out folder", out)
    seen: set[Path] = set()
    for t in targets:
        if t in seen:
            raise BloodcellInputError(f"two inputs would both be written as {t.name}; segment them into separate "
                                      "--out folders", out)
        seen.add(t)
    _check_output_folder(out)
    channels = []
    for case in cases:
        head, n = probe_case(case.images)
        check_volume_shape(head.shape, head.path)
        check_savable(head.affine, head.path)
        channels.append((head.path, n))
    return cases, targets, channels


def check_channels(channels: list[tuple[Path, int]], in_channels: int) -> None:
    for path, n in channels:
        if n != in_channels:
            raise BloodcellInputError(f"has {n} channel(s); the model takes {in_channels}", path)


def case_summary(case: Any, target: Path, shape: tuple[int, ...], seconds: float, windows: int,
                 warnings: list[str]) -> dict[str, Any]:
    """What ``bloodcell segment`` reports for one case (plain values: it is printed as JSON and kept in parts)."""
    return {"case": case.name, "input": str(case.images[0]), "output": str(target), "seconds": float(seconds),
            "windows": int(windows), "shape": list(shape), "warnings": list(warnings)}


def segment_files(inputs: list[str | Path], model: str | Path, out: str | Path, device: str = "auto",
                  patch: tuple[int, int, int] | None = None, overlap: float = 0.5, blend: str = "gaussian",
                  batch: int = 2, amp: bool = True, suffix: str = "_seg", largest_only: bool = False
                  ) -> Generator[dict[str, Any], None, list[dict[str, Any]]]:
    """Segment NIfTI files (or cases of a folder) and write ``OUT/<case><suffix>.nii.gz`` on each input's grid.

    Everything that could stop the job half-way is checked before the first window: existing outputs (never
    overwritten), the output folder, and every case's header (geometry that can be saved, voxel type, size,
    channels the model takes, 3D).
    """
    from ..datasets.volumes import load_image_channels
    from ..device import as_device
    from ..io.nifti import save_nifti

    out = Path(out)
    cases, targets, channels = plan_segmentation(inputs, out, suffix)
    seg = load_segmenter(model, as_device(device))
    check_channels(channels, seg.in_channels)
    results = []
    for k, (case, target) in enumerate(zip(cases, targets)):
        image, vol = load_image_channels(case.images)
        job = segment_array(seg, image, vol.spacing, patch, overlap, blend, batch, amp, largest_only=largest_only)
        result = yield from relay(job, stage=f"{case.name} ({k + 1}/{len(cases)})")
        out.mkdir(parents=True, exist_ok=True)
        save_nifti(result.labels, vol.affine, target, is_label_map=True)
        results.append(case_summary(case, target, result.labels.shape, result.seconds, result.windows,
                                    vol.warnings + result.warnings))
    return results


def segment_job(model: str | Path, image: np.ndarray, spacing: tuple[float, ...] | None, device: str = "auto",
                patch: tuple[int, int, int] | None = None, overlap: float = 0.5, blend: str = "gaussian",
                batch: int = 2, largest_only: bool = False) -> Generator[Any, None, tuple[Segmenter, SegmentationResult]]:
    """What the Segment widget runs in its worker: load the model there (not on the GUI thread), then segment."""
    from ..device import as_device
    from ..models.recent import remember

    yield note("loading the segmenter…", "load")
    seg = load_segmenter(model, as_device(device))
    remember(model, "segmenter")
    result = yield from segment_array(seg, image, spacing, patch, overlap, blend, batch, largest_only=largest_only)
    return seg, result


def model_label(seg: Segmenter) -> str:
    """``highres3dnet:NAME@digest`` — written on the label layer so a correction says what it corrected."""
    from ..models.checkpoints import model_id

    return model_id(seg.path, seg.checkpoint) if seg.path is not None else seg.checkpoint["arch"]
