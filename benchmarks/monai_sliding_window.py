"""MONAI's ``sliding_window_inference`` (gaussian blending) against our own sliding window (issue 15, item 6).

    python benchmarks/monai_sliding_window.py [--model CKPT] [--data ../shared/data/msd_hippocampus]
        [--cases N] [--json OUT.json] [--threads 2] [--skip-sample] [--skip-machinery]

Needs ``pip install monai`` (a measurement only: MONAI is not a dependency of the plugin).

Both run the same network on the same z-scored volume, blend softmax probabilities with a gaussian (σ = patch/8)
and crop back; the label map is the argmax. Three ways are compared:

* ``ours``: :func:`napari_bloodcell.core.inference.segment3d.sliding_window` (what ``segment`` and validation run);
* ``monai``: ``sliding_window_inference(..., mode="gaussian", sigma_scale=0.125)`` padded with the volume's
  minimum (our padding), so only the windowing and blending code differ;
* ``monai_default_pad``: the same with MONAI's default padding value 0 (what a plain switch would run: on a
  z-scored volume 0 is the mean intensity, not the dark background).

Cases:

1. ``sample``: the shipped synthetic MRI (``sample_data/mri``, 80×96×72) through a narrow HighRes3DNet with
   random weights (no model is trained on it), 48³ windows, overlap 0.5 (18 windows, so blending matters):
   agreement of probabilities and labels.
2. ``hippocampus``: the validation split of MSD Task04 (pairs kept together, fraction 0.2: 43 cases) through a
   trained segmenter (``--model``), once with the benchmark's single 48×64×48 window per case (only padding
   differs) and once with 32³ windows at overlap 0.5 (several windows per case): Dice per label, agreement, time.
3. ``machinery``: a 256×256×150 volume (an IXI-sized head) with 96³ windows at overlap 0.25 and 0.5, through a
   pointwise network (one 1×1×1 convolution), so the time is the windowing and blending themselves, where the
   two differ (the network's time is the same: same windows, same batches); each method in a fresh process:
   seconds (best of 3), and peak resident memory above what the process held before (Linux), from a process
   that ran the method once.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("ours", "monai", "monai_default_pad")
NARROW = {"features": (4, 8, 8), "head_features": 8}


def ours(model, image: np.ndarray, patch, overlap: float, batch: int) -> np.ndarray:
    from napari_bloodcell.core.inference.segment3d import sliding_window
    from napari_bloodcell.core.progress import drain

    return drain(sliding_window(model, image, tuple(patch), overlap, "gaussian", batch, "cpu"))


def monai(model, image: np.ndarray, patch, overlap: float, batch: int, cval: float | None) -> np.ndarray:
    from monai.inferers import sliding_window_inference

    pad = float(image.reshape(image.shape[0], -1).min(1)[0]) if cval is None else cval
    model.eval()
    with torch.no_grad():
        out = sliding_window_inference(torch.from_numpy(np.ascontiguousarray(image))[None], tuple(patch), batch,
                                       lambda x: torch.softmax(model(x).float(), dim=1), overlap=overlap,
                                       mode="gaussian", sigma_scale=0.125, padding_mode="constant", cval=pad)
    return out[0].numpy()


def run(method: str, model, image, patch, overlap, batch) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    if method == "ours":
        probs = ours(model, image, patch, overlap, batch)
    else:
        probs = monai(model, image, patch, overlap, batch, None if method == "monai" else 0.0)
    return probs, time.perf_counter() - start


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def compare(model, cases, patch, overlap, batch, label_values, names) -> dict:
    """Per method: seconds, Dice per label (when labels are given), and agreement with ``ours``."""
    out = {m: {"seconds": 0.0, "dice": {names.get(v, str(v)): [] for v in label_values[1:]}} for m in METHODS}
    agree = {m: {"max_abs_prob_diff": 0.0, "voxels_with_another_label": 0, "voxels": 0} for m in METHODS[1:]}
    for image, labels in cases:
        probs = {}
        for m in METHODS:
            probs[m], seconds = run(m, model, image, patch, overlap, batch)
            out[m]["seconds"] += seconds
            pred = np.asarray(label_values)[probs[m].argmax(0)]
            if labels is not None:
                for v in label_values[1:]:
                    out[m]["dice"][names.get(v, str(v))].append(dice(pred == v, labels == v))
            probs[m] = (probs[m], pred)
        for m in METHODS[1:]:
            agree[m]["max_abs_prob_diff"] = max(agree[m]["max_abs_prob_diff"],
                                                float(np.abs(probs[m][0] - probs["ours"][0]).max()))
            agree[m]["voxels_with_another_label"] += int((probs[m][1] != probs["ours"][1]).sum())
            agree[m]["voxels"] += int(probs[m][1].size)
    for m in METHODS:
        d = out[m].pop("dice")
        if labels is not None:
            out[m]["dice_mean"] = {k: float(np.mean(v)) for k, v in d.items()}
            out[m]["mean_dice"] = float(np.mean([np.mean(v) for v in d.values()]))
        out[m]["seconds_per_case"] = out[m]["seconds"] / len(cases)
    return {"cases": len(cases), "patch": list(patch), "overlap": overlap, "batch": batch, "methods": out,
            "agreement_with_ours": agree}


def sample_case(args) -> dict:
    from napari_bloodcell.core.datasets.volumes import find_cases, load_case
    from napari_bloodcell.core.models.highres3dnet import HighRes3DNet

    torch.manual_seed(0)
    model = HighRes3DNet(1, 3, **NARROW).eval()
    image, labels, _ = load_case(find_cases(ROOT / "sample_data" / "mri")[0])
    return {"volume": list(image.shape[1:]), "weights": f"random, HighRes3DNet {NARROW}",
            **compare(model, [(image, None)], (48, 48, 48), 0.5, 2, [0, 1, 2], {})}


def hippocampus(args, patch, overlap) -> dict:
    from napari_bloodcell.core.datasets.volumes import find_cases, load_case, split_cases
    from napari_bloodcell.core.inference.segment3d import load_segmenter

    seg = load_segmenter(args.model, "cpu")
    _, val = split_cases(find_cases(args.data), 0.2, pair_cases=True)
    val = val[: args.cases] if args.cases else val
    cases = []
    for case in val:
        image, labels, _ = load_case(case)
        cases.append((image, labels))
    return {"model": str(args.model), **compare(seg.model, cases, patch, overlap, 2, seg.label_values,
                                                seg.label_names)}


def _current_rss_kb() -> int:
    """Resident memory now (Linux), in the unit of ``ru_maxrss`` (KiB)."""
    import os

    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def probe(method: str, shape, patch: int, overlap: float, repeat: int = 3) -> None:
    """One method on one large random volume in this (fresh) process, through a pointwise network: prints the best
    of ``repeat`` times and, for ``repeat=1``, the peak resident memory above what the process held before."""
    import gc

    torch.manual_seed(0)
    model = torch.nn.Conv3d(1, 3, 1).eval()
    image = np.random.default_rng(0).standard_normal(size=(1, *shape), dtype=np.float32)
    run(method, model, image[:, :patch, :patch, :patch], (patch,) * 3, 0.0, 1)  # warm-up
    gc.collect()
    base = _current_rss_kb()
    times = []
    for _ in range(repeat):
        probs, seconds = run(method, model, image, (patch,) * 3, overlap, 2)
        times.append(seconds)
        del probs
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"method": method, "seconds": min(times), "seconds_all": times,
                      "peak_rss_growth_mb": (peak - base) / 1024 if repeat == 1 else None}))


def machinery(args) -> dict:
    from napari_bloodcell.core.inference.segment3d import count_windows

    shape, patch = (256, 256, 150), 96
    out = {"shape": list(shape), "patch": patch, "network": "one 1x1x1 convolution (3 classes)",
           "output_mb": 3 * int(np.prod(shape)) * 4 / 2**20}
    for overlap in (0.25, 0.5):
        row = {"windows": count_windows(shape, (patch,) * 3, overlap)}
        for m in METHODS[:2]:
            row[m] = {}
            for repeat in (3, 1):  # times (best of 3), then memory in a process that ran once
                code = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import torch; "
                        f"torch.set_num_threads({args.threads}); import monai_sliding_window as b; "
                        f"b.probe({m!r}, {shape}, {patch}, {overlap}, {repeat})")
                done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                got = json.loads(done.stdout.strip().splitlines()[-1])
                if repeat == 3:
                    row[m].update(seconds=got["seconds"], seconds_all=got["seconds_all"])
                else:
                    row[m]["peak_rss_growth_mb"] = got["peak_rss_growth_mb"]
        out[f"overlap_{overlap}"] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "msd_hippocampus")
    ap.add_argument("--cases", type=int, default=0, help="the first N validation cases only (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-machinery", action="store_true")
    ap.add_argument("--skip-sample", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import monai as monai_package

    result = {"torch": torch.__version__, "monai": monai_package.__version__, "threads": args.threads}
    if not args.skip_sample:
        result["sample"] = sample_case(args)
        print(json.dumps(result["sample"], indent=1), flush=True)
    if args.model is not None and args.data.is_dir():
        for key, patch, overlap in (("hippocampus_one_window", (48, 64, 48), 0.25),
                                    ("hippocampus_32_overlap_0.5", (32, 32, 32), 0.5)):
            result[key] = hippocampus(args, patch, overlap)
            print(json.dumps(result[key], indent=1), flush=True)
    else:
        result["hippocampus"] = "skipped: no --model, or no ../shared/data/msd_hippocampus"
    if not args.skip_machinery:
        result["machinery"] = machinery(args)
        print(json.dumps(result["machinery"], indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
