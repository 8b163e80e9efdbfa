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
from ..tasks import TASKS
from ..untrusted import regular_file

FORMAT = TASKS["detector"].format
REQUIRED = ("format", "arch", "arch_args", "classes", "model")


def save_checkpoint(ckpt: dict[str, Any], path: str | Path, exist: ExistPolicy = "refuse") -> Path:
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return atomic_write_bytes(path, buffer.getvalue(), exist=exist)


def safe_torch_load(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load`` with ``weights_only=True`` and errors a user can act on. A file holding anything beyond
    tensors and plain values is refused outright: unpickling it could run code, and we never suggest loading it
    with ``weights_only=False`` (torch's own message does)."""
    import pickle
    import warnings

    path = Path(path)
    if not path.exists():
        raise BloodcellInputError(f"no such {what} file", path)
    regular_file(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr; the outcome is what counts
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" not in str(exc) and "global" not in str(exc):  # damaged bytes, not a refused object
            raise BloodcellInputError(f"not a loadable PyTorch {what} (damaged or not a torch file: "
                                      f"{_weights_only_reason(exc)})", path) from None
        raise BloodcellInputError(
            f"refused: this {what} holds Python objects beyond tensors and plain values, which could run code when "
            "loaded; napari-bloodcell loads only weights-only checkpoints (re-save the state dict with torch.save)",
            path) from None
    except MemoryError:
        raise BloodcellInputError(f"{what} is too large to load into memory", path) from None
    except Exception as exc:  # zip, pickle-protocol and storage errors all mean "not a torch file"
        reason = next((ln.strip() for ln in str(exc).splitlines()
                       if ln.strip() and "weights_only" not in ln and "trust" not in ln), type(exc).__name__)
        raise BloodcellInputError(f"not a loadable PyTorch {what} ({type(exc).__name__}: {reason[:200]})",
                                  path) from None


def _weights_only_reason(exc: BaseException) -> str:
    """The line of torch's weights-only message that says what was wrong, without its advice to load unsafely."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not any(w in ln for w in ("weights_only", "trust", "Please file", "documentation"))]
    return (useful[-1] if useful else type(exc).__name__)[:200]


def load_checkpoint(path: str | Path, expect: str = FORMAT) -> dict[str, Any]:
    path = Path(path)
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != expect:
        raise BloodcellInputError(
            f"not a {expect} checkpoint (it has {sorted(map(str, ckpt))[:8] if isinstance(ckpt, dict) else type(ckpt).__name__}); "
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
    try:
        model = build_detector(str(ckpt["arch"]), [str(c) for c in ckpt["classes"]], weights="none",
                               arch_args=dict(ckpt["arch_args"]))
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as exc:
        if isinstance(exc, BloodcellInputError):
            raise BloodcellInputError(exc.problem, path) from None
        raise BloodcellInputError(f"its architecture or weights do not fit ({type(exc).__name__}: "
                                  f"{' '.join(str(exc).split())[:200]})", path) from None
    model.initial_weights = ckpt.get("initial_weights", "unknown")
    return model.to(device).eval(), ckpt
