"""Milliseconds per cell crop for each classifier, through the same path as ``bloodcell classify``.

    .venv/bin/python benchmarks/classification_speed.py [--device cpu|cuda] [--batch 16] [--repeat 3] [--size N]

Each run cuts 64 square crops out of a synthetic 640x480 smear (the shipped sample), resizes them to the model's
input (224, or 299 for inception_v3, unless --size is given) and classifies them in batches
(:func:`classify_boxes`); the time per crop includes cutting and resizing. Weights are random (speed does not
depend on them). One warm-up run, then the median of ``--repeat`` runs. Prints one JSON line per architecture.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from napari_bloodcell.core.inference.classify import ClassifierPredictor, classify_boxes
from napari_bloodcell.core.models.classifiers import ARCHITECTURES, build_classifier
from napari_bloodcell.core.models.detectors import as_device
from napari_bloodcell.core.progress import drain


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size", type=int, help="input size for every model (default: each model's own)")
    parser.add_argument("--arch", nargs="*", default=list(ARCHITECTURES))
    args = parser.parse_args()
    from napari_bloodcell.core.synthetic.samples import sample_smear

    smear = sample_smear(0, 0)
    rng = np.random.default_rng(0)
    centres = rng.uniform([60, 60], [580, 420], size=(64, 2))
    boxes = np.concatenate([centres - 40, centres + 40], 1)
    device = as_device(args.device)
    for arch in args.arch:
        model = build_classifier(arch, ["a", "b", "c", "d"], input_size=args.size).to(device).eval()
        pred = ClassifierPredictor(model, model.classes, "softmax", device, batch_size=args.batch)
        drain(classify_boxes(pred, smear.image, boxes[: args.batch]))  # warm-up
        times = []
        for _ in range(args.repeat):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            drain(classify_boxes(pred, smear.image, boxes))
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1000 / len(boxes))
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
        print(json.dumps({"arch": arch, "input": model.input_size, "batch": args.batch, "device": name,
                          "ms_per_crop": round(statistics.median(times), 2),
                          "runs_ms": [round(t, 2) for t in times]}), flush=True)


if __name__ == "__main__":
    main()
