"""The model registry: every trained version kept, immutable, with where it came from; one active per task.

Layout::

    REGISTRY/registry.json      versions (id, task, file, parent, dataset + version, metrics on the fixed
                                validation split, date, command, who), the active version per task and the
                                history of activations (for rollback)
    REGISTRY/models/<id>.pt     the checkpoint of each version, written once and never again

A version file is written before the registry names it and the registry file is replaced atomically, so a
process killed in the middle leaves the previous registry, and the previous active model, in force.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text, folder_lock
from ..errors import BloodcellInputError, nearest
from ..tasks import TASKS as TASK_SPECS
from ..untrusted import json_text

FORMAT = "napari-bloodcell/registry"
TASKS = tuple(TASK_SPECS)
"""The tasks a registry keeps versions of; what each is (format, headline metric) is in :mod:`..tasks`."""


def checkpoint_metrics(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The flat validation numbers a checkpoint records (detector/classifier ``val_metrics``, segmenter
    ``metrics`` with its per-label Dice flattened to ``dice_<label>``)."""
    metrics = dict(ckpt.get("val_metrics") or ckpt.get("metrics") or {})
    for name, value in dict(metrics.pop("dice", None) or {}).items():
        metrics[f"dice_{name}"] = value
    return metrics


def default_registry() -> Path:
    """``registry`` in the plugin's folder (:func:`..paths.home`, the one rule for ``BLOODCELL_HOME``)."""
    from ..paths import home

    return home() / "registry"


VERSION_ID = re.compile(r"v\d{4,9}")


def _check_entries(data: dict[str, Any], file: Path) -> None:
    """Every version names its checkpoint as ``models/vNNNN.pt`` inside the registry: a registry copied from
    elsewhere must not point the plugin at files outside it."""
    versions, active = data.get("versions"), data.get("active")
    if not isinstance(versions, list) or not isinstance(active, dict) or not isinstance(data.get("history", []), list):
        raise BloodcellInputError("malformed model registry: 'versions', 'active' or 'history' has the wrong type",
                                  file)
    for v in versions:
        if not isinstance(v, dict) or not isinstance(v.get("id"), str) or not VERSION_ID.fullmatch(v["id"]):
            raise BloodcellInputError("malformed model registry: a version has no id vNNNN", file)
        if v.get("file") != f"models/{v['id']}.pt" or not isinstance(v.get("task"), str):
            raise BloodcellInputError(f"malformed model registry: version {v['id']} names the file "
                                      f"{str(v.get('file'))[:60]!r} (expected models/{v['id']}.pt)", file)


class ModelRegistry:
    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_registry()
        self.file = self.folder / "registry.json"

    # -- reading -------------------------------------------------------------------------------------------------
    def load(self) -> dict[str, Any]:
        if not self.file.is_file():
            return {"format": FORMAT, "versions": [], "active": {}, "history": []}
        from ..untrusted import load_json

        data = load_json(self.file, nan_as_null=True)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise BloodcellInputError(f"not a model registry (format {str(found)[:40]!r})", self.file)
        _check_entries(data, self.file)
        return data

    def versions(self, task: str | None = None) -> list[dict[str, Any]]:
        return [v for v in self.load()["versions"] if task is None or v["task"] == task]

    def get(self, version_id: str) -> dict[str, Any]:
        versions = self.load()["versions"]
        for v in versions:
            if v["id"] == version_id:
                return v
        ids = [v["id"] for v in versions]
        raise BloodcellInputError(f"no model version {version_id!r}{nearest(version_id, ids)}; versions: {ids}",
                                  self.file)

    def active(self, task: str = "detector") -> dict[str, Any] | None:
        data = self.load()
        active = data["active"].get(_check_task(task))
        return next((v for v in data["versions"] if v["id"] == active), None) if active else None

    def path(self, entry: dict[str, Any]) -> Path:
        if entry.get("bundled"):  # the shipped model (v0000): a file of the package, checksum-verified
            from .bundled import bundled_for, verified_file

            model = bundled_for(entry["task"])
            if model is None:
                raise BloodcellInputError(f"this installation ships no {entry['task']}")
            return verified_file(model)
        return self.folder / entry["file"]

    def listing(self, task: str | None = None) -> list[dict[str, Any]]:
        """The versions of ``task`` (every task when None), with the bundled model as ``v0000`` of each task that
        has no version of its own."""
        from .bundled import bundled_entry

        versions = self.versions(task)
        for name in ([task] if task else TASKS):
            if not any(v["task"] == name for v in versions):
                entry = bundled_entry(name)
                if entry is not None:
                    versions.insert(0, entry)
        return versions

    def active_or_bundled(self, task: str = "detector") -> dict[str, Any] | None:
        """The active version, else the bundled model's entry (``v0000``), else None."""
        from .bundled import bundled_entry

        return self.active(task) or bundled_entry(_check_task(task))

    def active_file(self, task: str = "detector") -> tuple[dict[str, Any], Path] | None:
        """The active version and its checkpoint file, or None when there is none (or the registry is
        unreadable: the caller then falls back to a model that needs no registry)."""
        try:
            entry = self.active(task)
        except BloodcellInputError:
            return None
        if entry is None or not self.path(entry).is_file():
            return None
        return entry, self.path(entry)

    # -- changing ------------------------------------------------------------------------------------------------
    def add(self, checkpoint: str | Path, task: str, *, parent: str | None = None, dataset: str | None = None,
            dataset_version: int | None = None, metrics: dict[str, Any] | None = None,
            parent_metrics: dict[str, Any] | None = None, command: str = "", by: str = "",
            activate: bool = False, reason: str = "", extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Copy ``checkpoint`` in as a new immutable version; activate it when asked."""
        _check_task(task)
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise BloodcellInputError("no such checkpoint file", checkpoint)
        with folder_lock(self.folder, "the model registry"):
            data = self.load()
            number = 1 + max([int(v["id"][1:]) for v in data["versions"]] + [0])
            version_id = f"v{number:04d}"
            rel = f"models/{version_id}.pt"
            target = self.folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():  # left by a killed add: never named by the registry, so it can be set aside
                target.rename(target.with_name(f"{target.name}.orphan-{int(time.time())}"))
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(checkpoint, tmp)
            os.replace(tmp, target)
            entry = {
                "id": version_id, "task": task, "file": rel, "parent": parent, "dataset": dataset,
                "dataset_version": dataset_version, "metrics": metrics or {}, "parent_metrics": parent_metrics,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": command, "by": by, **(extra or {}),
            }
            data["versions"].append(entry)
            if activate:
                _set_active(data, task, version_id, reason or "registered and activated", by)
            self._write(data)
        return entry

    def activate(self, version_id: str, reason: str = "activated by hand", by: str = "",
                 task: str = "detector") -> dict[str, Any]:
        """Make a version the active one of its task; ``v0000`` (with ``task``) goes back to the bundled model."""
        from .bundled import BUNDLED_ID, bundled_entry

        if version_id == BUNDLED_ID:
            entry = bundled_entry(_check_task(task))
            if entry is None:
                raise BloodcellInputError(f"this installation ships no {task}, so there is no v0000 to go back to")
            with folder_lock(self.folder, "the model registry"):
                data = self.load()
                _set_active(data, task, BUNDLED_ID, reason, by)
                self._write(data)
            return entry
        with folder_lock(self.folder, "the model registry"):
            data = self.load()
            entry = next((v for v in data["versions"] if v["id"] == version_id), None)
            if entry is None:
                self.get(version_id)  # raises with the list of versions
            if not self.path(entry).is_file():
                raise BloodcellInputError(f"the file of {version_id} is missing", self.path(entry))
            _set_active(data, entry["task"], version_id, reason, by)
            self._write(data)
        return entry

    def rollback(self, task: str = "detector", by: str = "") -> dict[str, Any]:
        """Re-activate the version that was active before the current one."""
        from .bundled import BUNDLED_ID

        data = self.load()
        current = data["active"].get(_check_task(task)) or BUNDLED_ID  # none active: the bundled one is in use
        earlier = [h["active"] for h in data["history"] if h["task"] == task and h["active"] != current]
        if not earlier:
            raise BloodcellInputError(f"no earlier active {task} to roll back to", self.file)
        return self.activate(earlier[-1], reason=f"rollback from {current}", by=by, task=task)

    def _write(self, data: dict[str, Any]) -> None:
        atomic_write_text(self.file, json_text(data, indent=1) + "\n", exist="replace")


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise BloodcellInputError(f"unknown model task {task!r}{nearest(task, TASKS)}; allowed: {', '.join(TASKS)}")
    return task


def _set_active(data: dict[str, Any], task: str, version_id: str, reason: str, by: str) -> None:
    """Record the activation in the history; ``v0000`` leaves no active version, so jobs use the bundled model."""
    from .bundled import BUNDLED_ID

    if version_id == BUNDLED_ID:
        data["active"].pop(task, None)
    else:
        data["active"][task] = version_id
    data["history"].append({"task": task, "active": version_id, "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                            "reason": reason, "by": by})
