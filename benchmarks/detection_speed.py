"""Milliseconds per 640×480 field for each detector, batch 1 and batch 16, on the chosen device.

    .venv/bin/python benchmarks/detection_speed.py [--device cpu|cuda] [--repeat 5] [--arch NAME ...]

Weights are random (speed does not depend on them, except that a trained model's NMS sees fewer boxes: the score
threshold is 0.3 as in `bloodcell detect`). Prints one JSON line per architecture and batch size.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from napari_bloodcell.core.inference.detect import ClassicalPredictor, TorchPredictor
from napari_bloodcell.core.models.detectors import as_device, build_detector

ARCHS = {
    "classical": {},
    "ssd300_vgg16": {},
    "ssdlite320_mobilenet_v3_large": {},
    "fasterrcnn_mobilenet_v3_large_fpn": {"min_size": 480},
    "yolov3": {"input_size": 320},
    "retinanet_resnet50_fpn_v2": {"min_size": 480},
    "fcos_resnet50_fpn": {"min_size": 480},
    "fasterrcnn_resnet50_fpn_v2": {"min_size": 480},
    "fasterrcnn_resnet101_fpn": {"min_size": 480},
}


def field() -> np.ndarray:
    from napari_bloodcell.core.synthetic.samples import sample_smear

    return sample_smear(0, 0).image


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--arch", nargs="+", default=list(ARCHS))
    args = parser.parse_args()
    device = as_device(args.device)
    image = field()
    for arch in args.arch:
        if arch == "classical":
            predictor = ClassicalPredictor()
        else:
            torch.manual_seed(0)
            model = build_detector(arch, ["WBC", "RBC", "Platelets"], "none", ARCHS[arch]).to(device).eval()
            predictor = TorchPredictor(model, arch, device)
        for batch in args.batches:
            if arch == "classical" and batch > 1:
                continue
            tiles = [image] * batch
            predictor.predict(tiles, 0.3, 0.5)  # warm-up (cuDNN autotune, lazy imports)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                predictor.predict(tiles, 0.3, 0.5)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append((time.perf_counter() - t0) * 1000 / batch)
            print(json.dumps({"arch": arch, "device": str(device), "batch": batch,
                              "ms_per_image": round(float(np.median(times)), 1),
                              "threads": torch.get_num_threads(),
                              "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None}), flush=True)


if __name__ == "__main__":
    main()
