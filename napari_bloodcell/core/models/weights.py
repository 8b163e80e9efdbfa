"""Initial weights for a model: none, ImageNet backbone, COCO detector, a local file, or ``auto``.

Pretrained files come from torchvision's URLs through torch's hub cache (``$TORCH_HOME/hub/checkpoints``). A file
already in the cache is used offline; otherwise it is downloaded, and when that fails (no network) the error says
within seconds which file to put where, or how to pass a local file instead. ``auto`` takes the best pretrained
weights that work and falls back to random weights with a visible warning, never silently.
"""

from __future__ import annotations

import socket
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import BloodcellInputError

CHOICES = ("none", "imagenet", "coco", "auto")


def _enum(name: str):
    from torchvision.models import get_weight

    return get_weight(name)


def cache_file(weights_enum) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights_enum.url).name


def ensure_available(weights_enum, timeout: float = 10.0) -> Path:
    """The cached file of a torchvision weights entry, downloading it if needed; a clear error when offline."""
    target = cache_file(weights_enum)
    if target.is_file():
        return target
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        torch.hub.load_state_dict_from_url(weights_enum.url, progress=False, check_hash=False, map_location="cpu")
    except Exception as exc:  # URLError, timeouts, HTTP errors: all mean "not reachable"
        raise BloodcellInputError(
            f"pretrained weights {weights_enum} could not be downloaded ({type(exc).__name__}: {exc}). "
            f"Offline, download {weights_enum.url} on a connected machine and put it at {target}, "
            f"or pass the file with --weights PATH, or use --weights none to start from random weights"
        ) from None
    finally:
        socket.setdefaulttimeout(old)
    return target


def backbone_weights_for(spec, weights: str) -> tuple[Any, str]:
    """The backbone weights enum to build with (or None) and the resolved request (``auto`` decided here)."""
    request = str(weights)
    if request == "auto":
        for kind in ("coco", "imagenet"):
            name = spec.coco_weights if kind == "coco" else spec.imagenet_weights
            if name is None:
                continue
            try:
                ensure_available(_enum(name), timeout=5.0)
            except BloodcellInputError:
                continue
            return backbone_weights_for(spec, kind)
        warnings.warn(
            f"no pretrained weights reachable for {spec.name}: starting from random weights "
            "(training will need far more data and epochs; see docs/detection.md for supplying weight files)",
            stacklevel=3,
        )
        return None, "none"
    if request == "none":
        return None, "none"
    if request == "imagenet":
        if spec.imagenet_weights is None:
            raise BloodcellInputError(
                f"torchvision has no ImageNet backbone weights for {spec.name}; pass a file with --weights PATH "
                "(e.g. darknet53 converted to a state dict) or use --weights none"
            )
        enum = _enum(spec.imagenet_weights)
        ensure_available(enum)
        return enum, "imagenet"
    if request == "coco":
        if spec.coco_weights is None:
            from .detectors import ARCHITECTURES

            have = [a.name for a in ARCHITECTURES.values() if a.coco_weights]
            raise BloodcellInputError(
                f"torchvision has no COCO weights for {spec.name}; those with COCO weights are {', '.join(have)}"
            )
        ensure_available(_enum(spec.coco_weights))
        return None, "coco"
    path = Path(request)
    if not path.is_file():
        raise BloodcellInputError(
            f"initial weights {request!r} are neither one of {', '.join(CHOICES)} nor an existing file"
        )
    return None, str(path)


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a project checkpoint or a plain state-dict file, loaded with ``weights_only=True``."""
    from .checkpoints import safe_torch_load

    obj = safe_torch_load(path, "weights file")
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BloodcellInputError("holds no state dict of tensors", path)
    return obj


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], prefixes: tuple[str, ...] = ("", "net.")) -> int:
    """Load every tensor whose name (optionally under ``net.``) and shape match; return how many did."""
    own = model.state_dict()
    picked: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in prefixes:
            name = prefix + key
            if name in own and own[name].shape == value.shape:
                picked[name] = value
                break
    model.load_state_dict(picked, strict=False)
    return len(picked)


def apply_initial_weights(model: nn.Module, spec, resolved: str) -> str:
    """Load COCO or file weights into ``model``; return the description recorded in checkpoints."""
    if resolved == "none":
        return "none"
    if resolved == "imagenet":
        return f"imagenet:{spec.imagenet_weights}"
    if resolved == "coco":
        enum = _enum(spec.coco_weights)
        state = enum.get_state_dict(progress=False)
        n = load_matching(model, state)
        return f"coco:{spec.coco_weights} ({n} tensors; class layers re-initialised)"
    state = load_state_file(resolved)
    n = load_matching(model, state)
    if n == 0:
        raise BloodcellInputError(f"none of its tensors fit a {spec.name} detector", resolved)
    return f"file:{resolved} ({n} of {len(model.state_dict())} tensors)"
