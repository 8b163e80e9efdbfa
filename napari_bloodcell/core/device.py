"""Which torch device a job runs on: one rule for detection, classification and segmentation."""

from __future__ import annotations

import torch

from .errors import BloodcellInputError


def as_device(device: str | None) -> torch.device:
    """``auto``/None → CUDA when there is one, else CPU; a clear error for a device that is not there."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise BloodcellInputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BloodcellInputError(f"device {device!r} asked for, but this machine has no CUDA GPU; use cpu or auto")
    return dev
