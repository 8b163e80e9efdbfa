"""Per-item results of an archive job, written as each item finishes, so a rerun skips what is done.

``OUT.parts/`` sits beside the final output ``OUT``: ``job.json`` records the settings (model and its digest,
thresholds) and each finished item is one small JSON file named by a hash of the item's identity (resolved path,
size and modification time, so an image changed since is redone). A rerun with the same settings reuses the
finished items; with other settings it is refused rather than mixing two models' results. When every item is
done the caller assembles ``OUT`` atomically and the folder is removed. Part files are read back as untrusted
data: one that does not decode is treated as not done and redone.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..errors import BloodcellInputError
from ..io.records import ImageRecord
from ..untrusted import json_text, load_json

MAX_PART_BYTES = 256 * 1024 * 1024
"""A part larger than this is not read (a slide's detections: a million boxes is about 150 MB of JSON)."""
JOB_FORMAT = "napari-bloodcell/archive-parts"
PART_NAME = re.compile(r"[0-9a-f]{32}\.json")


def item_identity(path: str | Path) -> str:
    """Resolved path, size and modification time: a file replaced since its part was written is redone."""
    p = Path(path).resolve()
    st = p.stat()
    return f"{p}|{st.st_size}|{st.st_mtime_ns}"


def parts_folder(out: str | Path) -> Path:
    """Where the per-item results of the job writing ``out`` are kept."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def remove_parts(out: str | Path) -> None:
    """Called once the assembled output is written: the parts are in it now. Only files this job names are
    deleted (``job.json`` and hash-named parts), and the folder only if that leaves it empty."""
    folder = parts_folder(out)
    if not folder.is_dir() or folder.is_symlink():
        return
    for f in folder.iterdir():
        if (f.name == "job.json" or PART_NAME.fullmatch(f.name)) and f.is_file() and not f.is_symlink():
            f.unlink()
    try:
        folder.rmdir()
    except OSError:  # something else was put there: left alone
        pass


class PartStore:
    """``OUT.parts/``: ``job.json`` with the settings and one JSON file per finished item."""

    def __init__(self, out: str | Path, settings: dict[str, Any]) -> None:
        self.folder = parts_folder(out)
        self.settings = json.loads(json.dumps(settings, default=str))
        job = self.folder / "job.json"
        if self.folder.is_symlink() or (self.folder.exists() and not self.folder.is_dir()):
            raise BloodcellInputError("is in the way of the job's per-item results folder; move it away",
                                      self.folder)
        if job.is_file():
            try:
                found = load_json(job, 1024 * 1024)
            except (BloodcellInputError, RecursionError):
                found = None
            if not isinstance(found, dict) or found.get("settings") != self.settings:
                raise BloodcellInputError(
                    "holds finished results of a run with other settings (model or thresholds); rerun with the "
                    "same settings to continue it, or delete the folder to start over", self.folder)
        else:
            if self.folder.is_dir() and any(self.folder.iterdir()):
                raise BloodcellInputError("is not empty and was not made by a bloodcell archive job (no job.json); "
                                          "move it away or choose another --out", self.folder)
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(job, json_text({"format": JOB_FORMAT, "settings": self.settings}, indent=1),
                              exist="replace")

    def part_path(self, identity: str) -> Path:
        return self.folder / (hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32] + ".json")

    def load(self, identity: str) -> dict[str, Any] | None:
        """The item's stored payload, or None when not done (or when its file does not decode: it is redone)."""
        path = self.part_path(identity)
        try:
            if path.is_symlink() or not path.is_file():
                return None
            data = load_json(path, MAX_PART_BYTES, nan_as_null=True)
        except (OSError, BloodcellInputError, RecursionError):
            return None
        if not isinstance(data, dict) or data.get("identity") != identity or not isinstance(data.get("result"), dict):
            return None
        return data["result"]

    def save(self, identity: str, result: dict[str, Any]) -> None:
        atomic_write_text(self.part_path(identity), json_text({"identity": identity, "result": result}),
                          exist="replace")

    def remove(self) -> None:
        remove_parts(self.folder.with_name(self.folder.name[:-len(".parts")]))

    def discard_if_empty(self) -> None:
        """Input refused before any item ran: leave nothing behind (a folder holding finished items stays)."""
        if not any(PART_NAME.fullmatch(f.name) for f in self.folder.iterdir()):
            self.remove()


def record_to_json(rec: ImageRecord) -> dict[str, Any]:
    """An image record as plain JSON values (boxes in the box contract, scores NaN-free as null)."""
    return {
        "file_name": rec.file_name, "width": int(rec.width), "height": int(rec.height),
        "boxes": np.asarray(rec.boxes, dtype=np.float64).tolist(),
        "labels": np.asarray(rec.labels, dtype=np.int64).tolist(),
        "scores": None if rec.scores is None else [float(s) if np.isfinite(s) else None for s in rec.scores],
        "sources": rec.sources, "reviews": rec.reviews, "attributes": rec.attributes,
        "path": None if rec.path is None else str(rec.path),
    }


def record_from_json(data: dict[str, Any], n_classes: int) -> ImageRecord:
    """The record of :func:`record_to_json`, checked (shapes, finite boxes, labels within the class list)."""
    try:
        boxes = np.asarray(data["boxes"], dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(data["labels"], dtype=np.int64).reshape(-1)
        scores = data.get("scores")
        scores = None if scores is None else np.array([np.nan if s is None else float(s) for s in scores])
        rec = ImageRecord(str(data["file_name"]), int(data["width"]), int(data["height"]), boxes, labels,
                          scores=scores, sources=_strings(data.get("sources")), reviews=_strings(data.get("reviews")),
                          attributes=_dicts(data.get("attributes")),
                          path=None if data.get("path") is None else Path(str(data["path"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"damaged part: {exc}") from None
    if not np.isfinite(boxes).all() or (len(labels) and (labels.min() < 0 or labels.max() >= n_classes)):
        raise ValueError("damaged part: boxes not finite or labels outside the class list")
    return rec


def _strings(values: Any) -> list[str] | None:
    if values is None:
        return None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError("expected a list of strings")
    return values


def _dicts(values: Any) -> list[dict[str, Any]] | None:
    if values is None:
        return None
    if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
        raise ValueError("expected a list of objects")
    return values
