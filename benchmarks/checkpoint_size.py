"""Checkpoint sizes of a YOLOv3-320 detector (3 classes): what a best checkpoint held before issue 15 (weights plus
the AdamW state only resuming needs), what the engine's best checkpoint holds now (float16 weights), and float32
weights alone for comparison.

    .venv/bin/python benchmarks/checkpoint_size.py
"""

from __future__ import annotations

import io

import torch

from napari_bloodcell.core.models.detectors import build_detector
from napari_bloodcell.core.training.engine import storable


def size_mb(obj) -> float:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return len(buffer.getvalue()) / 1e6


def main() -> None:
    model = build_detector("yolov3", ["RBC", "WBC", "Platelets"], "none", {"input_size": 320})
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    target = [{"boxes": torch.tensor([[10.0, 10, 50, 50]]), "labels": torch.tensor([1])}]
    sum(model([torch.rand(3, 320, 320)], target).values()).backward()
    optimizer.step()  # the optimiser's state exists after its first step
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    before = size_mb({"model": weights, "optimizer": optimizer.state_dict()})
    after = size_mb({"model": storable(weights, True)})
    print(f"parameters: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M")
    print(f"before (weights + AdamW state): {before:.0f} MB")
    print(f"float32 weights only:           {size_mb({'model': weights}):.0f} MB")
    print(f"now (float16 weights):          {after:.0f} MB ({after / before:.0%} of before)")


if __name__ == "__main__":
    main()
