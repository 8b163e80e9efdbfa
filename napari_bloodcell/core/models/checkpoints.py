"""Model checkpoints: one dict that says everything needed to rebuild, trust and reproduce a model.

A detector checkpoint holds the weights (``model``), ``arch`` and ``arch_args``, the ``classes``, the training
data's content hash (``data_hash``), the ``initial_weights`` it started from, the validation ``metrics``, the
``command`` that made it, the ``epoch``, and for resuming the optimizer and scheduler states. Only tensors,
numbers, strings, lists and dicts are stored, so it loads with ``torch.load(..., weights_only=True)``; it is
written atomically.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from ..atomic import ExistPolicy, atomic_write_bytes
from ..errors import BloodcellInputError

FORMAT = "napari-bloodcell/detector"
REQUIRED = ("format", "arch", "arch_args", "classes", "model")


def save_checkpoint(ckpt: dict[str, Any], path: str | Path, exist: ExistPolicy = "refuse") -> Path:
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return atomic_write_bytes(path, buffer.getvalue(), exist=exist)


def load_checkpoint(path: str | Path, expect: str = FORMAT) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise BloodcellInputError("no such checkpoint file", path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BloodcellInputError(
            f"not a loadable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]})", path
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != expect:
        raise BloodcellInputError(
            f"not a {expect} checkpoint (it has {sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt)}); "
            "a plain state dict can be used as initial weights for training (--weights PATH)", path
        )
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise BloodcellInputError(f"checkpoint lacks {', '.join(missing)}", path)
    return ckpt


def file_digest(path: str | Path, length: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def model_id(path: str | Path, ckpt: dict[str, Any]) -> str:
    """The ``source`` written on every box a model makes: architecture, file name and content digest."""
    return f"{ckpt['arch']}:{Path(path).stem}@{file_digest(path, 8)}"


def detector_from_checkpoint(path: str | Path, device: torch.device | str = "cpu"):
    """Rebuild a :class:`~.detectors.Detector` from a checkpoint (random init, then the saved weights)."""
    from .detectors import build_detector

    ckpt = load_checkpoint(path)
    model = build_detector(ckpt["arch"], list(ckpt["classes"]), weights="none", arch_args=ckpt["arch_args"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise BloodcellInputError(f"weights do not fit {ckpt['arch']}: {str(exc).splitlines()[0]}", path) from None
    model.initial_weights = ckpt.get("initial_weights", "unknown")
    return model.to(device).eval(), ckpt
