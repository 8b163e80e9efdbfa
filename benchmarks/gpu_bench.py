"""GPU figures in one run (issue 18): detection, 3D segmentation and one retrain, written as one JSON.

    bash benchmarks/gpu.sh                      # on a machine with a CUDA GPU
    python benchmarks/gpu_bench.py --out benchmarks/results/gpu.json [--device cuda:0]
    python benchmarks/gpu_bench.py --cpu-smoke  # checks this script's code paths on CPU, tiny sizes, no figures

Measures, with CUDA synchronised around every timing and warm-up passes first:

* **detection**: ms per 640×480 field for each shipped (bundled) detector, batch 1 and batch 16, fp16 autocast
  (what ``TorchPredictor`` runs on CUDA): fields are the sample smears cut to 640×480;
* **segmentation**: seconds per 256×256×150 volume for HighRes3DNet (default width, random weights: weights do
  not change the time), 96³ windows overlapping by a quarter, batch 4, AMP, Gaussian blending;
* **retrain**: one fine-tune of the bundled detector on 50 synthetic fields (the Review's *Retrain* settings:
  AdamW 1e-4, batch 2 unless ``--retrain-batch``, 5 epochs), seconds end to end including validation.

Exits with status 3 and one line when no CUDA GPU is present (unless ``--cpu-smoke``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fields(n: int) -> list[np.ndarray]:
    """``n`` 640×480 RGB fields cut from the synthetic sample smears."""
    from napari_bloodcell.core.synthetic.samples import sample_smear

    out = []
    k = 0
    while len(out) < n:
        image = sample_smear(k % 4, seed=k // 4).image
        h, w = image.shape[:2]
        canvas = np.zeros((480, 640, 3), np.uint8)
        canvas[:min(h, 480), :min(w, 640)] = image[:480, :640]
        out.append(canvas)
        k += 1
    return out


def time_detector(model_path: str, device: torch.device, batch: int, repeats: int) -> dict:
    from napari_bloodcell.core.inference.detect import load_predictor

    predictor = load_predictor(model_path, str(device), batch)
    data = fields(batch)
    for _ in range(2):
        predictor.predict(data, 0.3, 0.5)
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.predict(data, 0.3, 0.5)
        sync(device)
        times.append((time.perf_counter() - t0) * 1000.0 / batch)
    return {"model": Path(model_path).name, "batch": batch, "ms_per_field_median": round(float(np.median(times)), 3),
            "ms_per_field_min": round(float(np.min(times)), 3), "repeats": repeats}


def time_segmentation(device: torch.device, shape: tuple[int, int, int], patch: int, repeats: int) -> dict:
    from napari_bloodcell.core.inference.segment3d import count_windows, sliding_window
    from napari_bloodcell.core.models.highres3dnet import HighRes3DNet
    from napari_bloodcell.core.progress import drain

    model = HighRes3DNet(in_channels=1, n_classes=3).to(device).eval()
    image = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    windows = (patch,) * 3
    drain(sliding_window(model, image[:, :patch, :patch, :patch], windows, 0.25, batch=4, device=device))
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        drain(sliding_window(model, image, windows, 0.25, batch=4, device=device, amp=True))
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"volume": list(shape), "patch": patch, "windows": count_windows(shape, windows, 0.25),
            "seconds_per_volume_median": round(float(np.median(times)), 3), "repeats": repeats}


def time_retrain(device: torch.device, n_fields: int, epochs: int, batch: int, work: Path) -> dict:
    from napari_bloodcell.core.models.bundled import resolve
    from napari_bloodcell.core.models.checkpoints import load_checkpoint
    from napari_bloodcell.core.progress import drain
    from napari_bloodcell.core.synthetic.samples import write_samples
    from napari_bloodcell.core.training.detection import DetectorTrainConfig, train_detector

    data = work / "fields"
    for _ in write_samples("smear", data, seed=7, count=n_fields):
        pass
    parent, label = resolve("bundled", "detector")
    ckpt = load_checkpoint(parent)
    cfg = DetectorTrainConfig(arch=ckpt["arch"], arch_args=dict(ckpt["arch_args"]), data=data / "annotations.json",
                              out=work / "retrained.pt", epochs=epochs, batch=batch, lr=1e-4, optimizer="adamw",
                              weights=str(parent), device=str(device), warmup_iters=20)
    sync(device)
    t0 = time.perf_counter()
    result = drain(train_detector(cfg))
    sync(device)
    seconds = time.perf_counter() - t0
    best = result.get("best", {}) if isinstance(result, dict) else {}
    return {"parent": label, "fields": n_fields, "epochs": epochs, "batch": batch, "seconds": round(seconds, 2),
            "best_metrics": {k: v for k, v in best.items() if isinstance(v, (int, float))}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu.json")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--retrain-epochs", type=int, default=5)
    ap.add_argument("--retrain-batch", type=int, default=2)
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="run every step on CPU at tiny sizes to check the script (writes no GPU figures)")
    args = ap.parse_args()
    if args.cpu_smoke:
        device = torch.device("cpu")
        shape, patch, repeats, n_fields, epochs, batches = (48, 48, 32), 32, 1, 6, 1, (1, 2)
    else:
        if not torch.cuda.is_available():
            print(f"gpu benchmark: no CUDA GPU here (torch {torch.__version__}, built for CUDA "
                  f"{torch.version.cuda or 'none'}, {torch.cuda.device_count()} device(s) visible); run it on a GPU "
                  "machine, or with --cpu-smoke to check the script", file=sys.stderr)
            return 3
        device = torch.device(args.device)
        shape, patch, repeats, n_fields, epochs, batches = (256, 256, 150), 96, args.repeats, 50, \
            args.retrain_epochs, (1, 16)
    from napari_bloodcell.core.models.bundled import bundled_models, verified_file

    report: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
                    or "cpu", "torch": torch.__version__, "cuda": torch.version.cuda, "cpu_smoke": args.cpu_smoke,
                    "command": " ".join(sys.argv), "detection": [], "segmentation": None, "retrain": None}
    for entry in bundled_models():
        if entry.task != "detector":
            continue
        for batch in batches:
            report["detection"].append(time_detector(str(verified_file(entry)), device, batch, repeats))
            print(json.dumps(report["detection"][-1]), flush=True)
    report["segmentation"] = time_segmentation(device, shape, patch, repeats if not args.cpu_smoke else 1)
    print(json.dumps(report["segmentation"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        report["retrain"] = time_retrain(device, n_fields, epochs, args.retrain_batch, Path(tmp))
    print(json.dumps(report["retrain"]), flush=True)
    out = args.out if not args.cpu_smoke or args.out != ap.get_default("out") else Path(tempfile.gettempdir()) / \
        "gpu_cpu_smoke.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
