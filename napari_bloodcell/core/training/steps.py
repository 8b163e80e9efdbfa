"""The optimiser step every trainer shares: mixed precision on CUDA, gradients unscaled and clipped."""

from __future__ import annotations

import torch


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   params: list[torch.nn.Parameter], clip: float = 10.0) -> None:
    """Backpropagate ``loss`` and step; clipping the gradient norm keeps one bad batch from wrecking a model."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, clip)
    scaler.step(optimizer)
    scaler.update()
