"""Speed and size of the bundled starter detector, as a user runs it (``bloodcell detect --model bundled``).

    .venv/bin/python benchmarks/starter_speed.py [--device cpu|cuda] [--threads 2] [--repeat 20]

Times ``detect_array`` (resize, network, decoding, NMS, the trained model's real box counts) on a 640×480 BCCD
field when ../shared/data is present, and on the synthetic sample smear; image reading excluded. Writes
benchmarks/results/detection/starter_speed_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from napari_bloodcell.core.inference.detect import detect_array, load_predictor
from napari_bloodcell.core.io.images import read_image
from napari_bloodcell.core.models.bundled import bundled_for, verified_file
from napari_bloodcell.core.progress import drain
from napari_bloodcell.core.synthetic.samples import sample_smear

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = bundled_for("detector")
    if model is None:
        raise SystemExit("no bundled detector in this tree")
    predictor = load_predictor("bundled", args.device, batch_size=1)
    fields = {"synthetic smear 0 (615x461)": sample_smear(0).image}
    bccd = ROOT.parent / "shared" / "data" / "bccd" / "JPEGImages" / "BloodImage_00000.jpg"
    if bccd.is_file():
        fields["BCCD BloodImage_00000 (640x480)"] = read_image(bccd)
    result = {"device": args.device, "threads": args.threads, "cpu": platform.processor() or platform.machine(),
              "file_MB": verified_file(model).stat().st_size / 1e6,
              "parameters_M": sum(p.numel() for p in predictor.model.parameters()) / 1e6,
              "input_size": int(predictor.model.arch_args["input_size"]), "fields": {}}
    for name, image in fields.items():
        drain(detect_array(predictor, image, score=0.3, nms_iou=0.5))  # warm-up
        times = []
        for _ in range(args.repeat):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            boxes, _, _ = drain(detect_array(predictor, image, score=0.3, nms_iou=0.5))
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        result["fields"][name] = {"ms_median": 1000 * float(np.median(times)), "ms_max": 1000 * float(np.max(times)),
                                  "boxes": int(len(boxes))}
    out = ROOT / "benchmarks" / "results" / "detection" / f"starter_speed_{args.device.split(':')[0]}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
