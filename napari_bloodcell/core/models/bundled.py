"""Models shipped inside the package, so the plugin detects with a deep model on first launch, offline.

``napari_bloodcell/models/bundled.json`` lists each file with its task, SHA-256 and model card. A bundled file is
used only after its checksum matches (a damaged install says so instead of loading odd weights), and it loads like
any checkpoint, with ``weights_only=True``. Weights are stored in fp16 and widened to fp32 on load.

Which model a job uses when the user names none (:func:`default_model`): the registry's active model (what
retraining last promoted), else the bundled one, else (detector only) the classical detector. The registry lists
the bundled model as version ``v0000`` while it holds no model of that task (:func:`bundled_entry`).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from ..errors import BloodcellInputError
from ..untrusted import load_json

PACKAGE_MODELS = Path(__file__).resolve().parents[2] / "models"
MANIFEST = PACKAGE_MODELS / "bundled.json"
BUNDLED_ID = "v0000"


@dataclasses.dataclass(frozen=True)
class BundledModel:
    name: str
    task: str
    file: Path
    sha256: str
    card: str
    summary: str
    arch: str
    classes: tuple[str, ...]
    metrics: dict[str, Any]

    @property
    def label(self) -> str:
        """How the user is told this model is in use."""
        return f"bundled {self.name} ({self.arch})"


def bundled_models(manifest: Path | None = None) -> list[BundledModel]:
    """The models the package ships (none when the manifest is absent, as in a source tree without weights)."""
    manifest = MANIFEST if manifest is None else manifest
    if not manifest.is_file():
        return []
    data = load_json(manifest)
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise BloodcellInputError("malformed bundled-model manifest: no 'models' list", manifest)
    out = []
    for m in models:
        try:
            file = manifest.parent / str(m["file"])
            if file.parent != manifest.parent or "/" in str(m["file"]) or "\\" in str(m["file"]):
                raise ValueError("file outside the models folder")
            out.append(BundledModel(str(m["name"]), str(m["task"]), file, str(m["sha256"]), str(m.get("card", "")),
                                    str(m.get("summary", "")), str(m.get("arch", "")),
                                    tuple(map(str, m.get("classes", ()))), dict(m.get("metrics", {}))))
        except (KeyError, TypeError, ValueError) as exc:
            raise BloodcellInputError(f"malformed bundled-model manifest entry ({exc})", manifest) from None
    return out


def bundled_for(task: str) -> BundledModel | None:
    return next((m for m in bundled_models() if m.task == task), None)


@functools.lru_cache(maxsize=8)
def _verified(path: Path, size: int, mtime: float, sha256: str) -> bool:
    from .checkpoints import file_digest

    return file_digest(path, 64) == sha256


def verified_file(model: BundledModel) -> Path:
    """The model's file once its SHA-256 matches the manifest's (checked once per process and file state)."""
    if not model.file.is_file():
        raise BloodcellInputError(f"the bundled {model.name} is missing from the installation; reinstall "
                                  "napari-bloodcell", model.file)
    st = model.file.stat()
    if not _verified(model.file, st.st_size, st.st_mtime, model.sha256):
        raise BloodcellInputError(f"the bundled {model.name} does not match its checksum (damaged install); "
                                  "reinstall napari-bloodcell", model.file)
    return model.file


def bundled_entry(task: str) -> dict[str, Any] | None:
    """The registry-style entry of the bundled model of ``task`` (version ``v0000``), or None."""
    model = bundled_for(task)
    if model is None:
        return None
    return {"id": BUNDLED_ID, "task": task, "file": str(model.file), "bundled": True, "name": model.name,
            "arch": model.arch, "classes": list(model.classes), "metrics": dict(model.metrics), "parent": None,
            "dataset": "bundled", "dataset_version": None, "created": "shipped", "card": model.card}


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    model: str
    """What a job loads: a checkpoint path, or ``classical``."""
    origin: str
    """``registry``, ``bundled`` or ``classical``."""
    label: str
    """What the user is told: e.g. ``bundled starter-detector (yolov3_tiny)``."""


def default_model(task: str = "detector", registry: str | Path | None = None) -> ModelChoice | None:
    """The registry's active model of ``task``, else the bundled one, else the classical detector (detector
    only; None for other tasks)."""
    from .registry import ModelRegistry

    active = ModelRegistry(registry).active_file(task)
    if active is not None:
        entry, path = active
        arch = f" ({entry['arch']})" if entry.get("arch") else ""
        return ModelChoice(str(path), "registry", f"active {task} {entry['id']}{arch} from the registry")
    model = bundled_for(task)
    if model is not None:
        return ModelChoice(str(verified_file(model)), "bundled", model.label)
    if task == "detector":
        return ModelChoice("classical", "classical", "the classical detector (no trained model found)")
    return None


def resolve(model: str | Path, task: str = "detector") -> tuple[str, str]:
    """A model argument as a loadable name or path and the words that say which: ``auto`` is
    :func:`default_model`, ``bundled`` the shipped one; anything else is itself."""
    name = str(model)
    if name == "auto":
        choice = default_model(task)
        if choice is None:
            raise BloodcellInputError(f"no {task} is active in the registry and none is bundled; pass a checkpoint")
        return choice.model, choice.label
    if name == "bundled":
        bundled = bundled_for(task)
        if bundled is None:
            raise BloodcellInputError(f"this installation ships no {task} model; pass a file")
        return str(verified_file(bundled)), bundled.label
    return name, name


def record_bundled(entry: dict[str, Any], manifest: Path | None = None) -> dict[str, Any]:
    """Add or replace (by name) a model's entry in the manifest, with the SHA-256 of its file, which must lie in
    the manifest's folder. Used by the scripts that train the shipped models."""
    import json

    from ..atomic import atomic_write_text
    from .checkpoints import file_digest

    manifest = MANIFEST if manifest is None else manifest
    entry = {**entry, "sha256": file_digest(manifest.parent / entry["file"], 64)}
    data = json.loads(manifest.read_text()) if manifest.is_file() else {"format": "napari-bloodcell/bundled",
                                                                        "models": []}
    data["models"] = [m for m in data["models"] if m["name"] != entry["name"]] + [entry]
    atomic_write_text(manifest, json.dumps(data, indent=1) + "\n", exist="replace")
    return entry
