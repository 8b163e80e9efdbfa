"""HighRes3DNet speed: seconds per volume for sliding-window inference, and seconds per training iteration with
0 to 4 stages frozen (conv_0, res_1, res_2, res_3, cumulatively, as the thesis's transfer experiments).

    python benchmarks/segmentation_speed.py [--device cpu|cuda] [--threads 2] [--model CKPT] [--json OUT.json]
        [--skip-large] [--patch 96] [--train-patch 32] [--iters 8]

Inference runs the full-width network (random weights unless ``--model``: the weights do not change the time) on
an MSD hippocampus-sized crop (35×50×36) and on a 256×256×150 volume (the thesis's IXI size; about 17 s per subject
there on a Tesla V100), with ``--patch`` windows overlapping by a quarter. Training iterations are timed on random
patches (batch 2) after two warm-up steps, so they measure the network step, not the sampler; the sampler's own
cost is timed separately on MSD-like volumes.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from napari_bloodcell.core.datasets.patches import PatchSampler
from napari_bloodcell.core.inference.segment3d import count_windows, sliding_window
from napari_bloodcell.core.models.highres3dnet import (
    FREEZABLE,
    HighRes3DNet,
    count_trainable,
    freeze_stages,
)
from napari_bloodcell.core.training.segmentation import dice_ce_loss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_inference(model, shape, patch, overlap, device, batch) -> dict:
    image = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    for _ in sliding_window(model, image[:, :patch, :patch, :patch], (patch,) * 3, 0.0, "gaussian", 1, device):
        pass  # warm-up (cuDNN autotuning, allocator)
    _sync(device)
    start = time.perf_counter()
    for _ in sliding_window(model, image, (patch,) * 3, overlap, "gaussian", batch, device):
        pass
    _sync(device)
    return {"shape": list(shape), "patch": patch, "overlap": overlap, "windows": count_windows(shape, (patch,) * 3,
                                                                                                overlap),
            "seconds": time.perf_counter() - start}


def time_training(frozen: list[str], patch: int, iters: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = HighRes3DNet(1, 3).to(device)
    freeze_stages(model, frozen)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3, weight_decay=1e-4)
    x = torch.randn(2, 1, patch, patch, patch, device=device)
    y = torch.randint(0, 3, (2, patch, patch, patch), device=device)
    times = []
    for k in range(iters + 2):
        _sync(device)
        t = time.perf_counter()
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            logits = model(x)
        loss = dice_ce_loss(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        if k >= 2:
            times.append(time.perf_counter() - t)
    return {"frozen": frozen, "trainable": count_trainable(model), "s_per_iter": float(np.mean(times)),
            "s_per_iter_sd": float(np.std(times))}


def time_sampler(patch: int, n: int = 50) -> dict:
    rng = np.random.default_rng(0)
    images, labels = [], []
    for _ in range(20):
        lab = np.zeros((35, 50, 36), np.int64)
        lab[10:22, 15:30, 12:24] = rng.integers(1, 3)
        images.append(rng.normal(size=(1, 35, 50, 36)).astype(np.float32))
        labels.append(lab)
    sampler = PatchSampler(images, labels, 3, (patch,) * 3, "weighted", augment=True)
    start = time.perf_counter()
    for _ in range(n):
        sampler.batch(2)
    return {"patch": patch, "s_per_batch_of_2": (time.perf_counter() - start) / n}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--model", help="segmenter checkpoint to time instead of random weights")
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--train-patch", type=int, default=32)
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2, help="windows per forward pass in inference")
    parser.add_argument("--skip-large", action="store_true", help="skip the 256x256x150 volume")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.model:
        from napari_bloodcell.core.inference.segment3d import load_segmenter

        model = load_segmenter(args.model, device).model
    else:
        model = HighRes3DNet(1, 3).to(device).eval()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    results = {"device": name, "torch": torch.__version__, "inference": [], "training": [], "sampler": None}
    small_patch = min(args.patch, 64)
    results["inference"].append(time_inference(model, (35, 50, 36), small_patch, 0.25, device, args.batch))
    print(results["inference"][-1], flush=True)
    if not args.skip_large:
        results["inference"].append(time_inference(model, (256, 256, 150), args.patch, 0.25, device, args.batch))
        print(results["inference"][-1], flush=True)
    for k in range(len(FREEZABLE) + 1):
        results["training"].append(time_training(list(FREEZABLE[:k]), args.train_patch, args.iters, device))
        print(results["training"][-1], flush=True)
    results["sampler"] = time_sampler(args.train_patch)
    print(results["sampler"], flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
