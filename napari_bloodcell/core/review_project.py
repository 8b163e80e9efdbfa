"""A review project folder: one autosaved sidecar per image, restored when the image is opened again.

Layout::

    PROJECT/project.json           name, who created it, when
    PROJECT/images/<stem>-<hash>.json   the annotation table of one image (column-wise JSON), its sign-off and
                                   the last edits; the key holds the image's content hash, so the same picture
                                   finds its review again wherever it is opened from

Every change is written atomically (temporary file + rename) right after it is made, so a crash loses at most
the change being written. The write can run on a background thread (the GUI uses that so a key press never waits
for the disk); the snapshot is taken on the caller's thread, so later edits cannot tear it.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .annotations import (
    COLUMNS,
    FLOAT_COLUMNS,
    OBJECT_COLUMNS,
    AnnotationTable,
    Rows,
    objects,
)
from .atomic import atomic_write_text
from .errors import BloodcellInputError
from .io.records import REVIEW_STATES
from .untrusted import class_name, image_file, inside, is_hex_digest, json_text, load_json, one_line, whole

FORMAT = "napari-bloodcell/review"
PROJECT_FORMAT = "napari-bloodcell/review-project"
HISTORY_KEPT = 200


def image_digest(path: str | Path | None = None, array: np.ndarray | None = None, length: int = 16) -> str:
    """Content hash of an image file (or of pixel data when there is no file)."""
    h = hashlib.sha256()
    if path is not None:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    elif array is not None:
        a = np.ascontiguousarray(array)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    else:
        raise ValueError("image_digest needs a path or an array")
    return h.hexdigest()[:length]


def _digest(digest: str) -> str:
    if not is_hex_digest(digest):  # it names a file: never a path
        raise BloodcellInputError(f"image digest {str(digest)[:40]!r} is not a hexadecimal content hash")
    return digest


def image_key(file_name: str, digest: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(file_name).stem)[:60] or "image"
    return f"{stem}-{digest[:12]}"


class ReviewProject:
    """Where the reviews of a set of images are kept."""

    def __init__(self, folder: str | Path, create: bool = True) -> None:
        self.folder = Path(folder)
        meta = self.folder / "project.json"
        if meta.is_file():
            info = load_json(meta, 1024 * 1024)
            if not isinstance(info, dict) or info.get("format") != PROJECT_FORMAT:
                found = info.get("format") if isinstance(info, dict) else type(info).__name__
                raise BloodcellInputError(f"not a review project (format {str(found)[:40]!r})", meta)
            self.info = info
        elif create:
            if self.folder.exists() and any(p for p in self.folder.iterdir() if not p.name.startswith(".")):
                raise BloodcellInputError(
                    "is a folder with other files in it; choose an empty or new folder for a review project",
                    self.folder)
            self.info = {"format": PROJECT_FORMAT, "name": self.folder.name, "created": time.time()}
            atomic_write_text(meta, json.dumps(self.info, indent=1))
        else:
            raise BloodcellInputError("is not a review project (no project.json)", self.folder)

    def sidecar(self, key: str) -> Path:
        return self.folder / "images" / f"{key}.json"

    def keys(self) -> list[str]:
        return sorted(p.stem for p in (self.folder / "images").glob("*.json"))

    def save(self, key: str, table: AnnotationTable, image: dict[str, Any]) -> Path:
        return write_snapshot(self.sidecar(key), snapshot(table, image))

    def load(self, key: str) -> tuple[AnnotationTable, dict[str, Any]] | None:
        """The saved table and image description, or None when this image has no review yet."""
        path = self.sidecar(key)
        if not path.is_file():
            return None
        try:
            data = load_json(path)
        except BloodcellInputError as exc:
            raise BloodcellInputError(f"unreadable review sidecar ({exc.problem}); the previous good copy was replaced "
                                      "atomically, so this file was edited by hand or by another program", path) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise BloodcellInputError(f"not a review sidecar (format {str(found)[:40]!r})", path)
        return table_from_snapshot(data, path), checked_image(data.get("image"), path)

    def keep_pixels(self, digest: str, pixels: np.ndarray) -> Path:
        """Keep an image that exists only in memory (a sample, a layer made in napari) beside its review, losslessly,
        so that the review can be exported and reopened in another session like one of a file on disk."""
        from .atomic import atomic_write_bytes
        from .io.images import lossless_image_bytes

        found = self.kept_image(digest)
        if found is not None:
            return found
        data, suffix = lossless_image_bytes(pixels)
        return atomic_write_bytes(inside(self.folder / "pixels", f"{_digest(digest)}{suffix}"), data, exist="replace")

    def kept_image(self, digest: str) -> Path | None:
        """The image kept by :meth:`keep_pixels`, if it is there and decodes."""
        for suffix in (".png", ".tif"):
            found = image_file(self.folder / "pixels" / f"{_digest(digest)}{suffix}")
            if found is not None:
                return found
        return None

    def load_all(self) -> list[tuple[str, AnnotationTable, dict[str, Any]]]:
        out = []
        for key in self.keys():
            loaded = self.load(key)
            if loaded is not None:
                out.append((key, *loaded))
        return out


def capture(table: AnnotationTable) -> tuple:
    """What a sidecar needs, copied cheaply on the editing thread (about a millisecond for 10,000 cells: the
    columns are copied, their list/dict cells are shared because edits replace them instead of changing them)."""
    signed = dict(table.signed) if table.signed else None
    return (table.rows.copy(), list(table.classes), table.next_id, table.revision, signed,
            list(table.undo_stack[-HISTORY_KEPT:]))


def snapshot(table: AnnotationTable, image: dict[str, Any]) -> dict[str, Any]:
    """The table as plain JSON-ready data."""
    return snapshot_of(capture(table), image)


def snapshot_of(captured: tuple, image: dict[str, Any]) -> dict[str, Any]:
    rows, classes, next_id, revision, signed, edits = captured
    c = rows.columns
    cells = {
        "id": c["id"].tolist(), "box": np.round(c["box"], 3).tolist(), "label": c["label"].tolist(),
        **{name: [None if math.isnan(v) else v for v in c[name].tolist()] for name in FLOAT_COLUMNS},
        **{name: list(c[name]) for name in OBJECT_COLUMNS},
    }
    return {
        "format": FORMAT, "version": 1, "saved": time.time(), "image": image, "classes": classes,
        "next_id": next_id, "revision": revision, "signed": signed,
        "history": [e.summary() for e in edits], "cells": cells,
    }


def write_snapshot(path: Path, data: dict[str, Any]) -> Path:
    return atomic_write_text(path, json_text(data, separators=(",", ":"), default=str), exist="replace")


def checked_image(image: Any, path: Path | None = None) -> dict[str, Any]:
    """A sidecar's image description, checked: its ``digest`` names a file in every dataset it is exported to,
    and its ``path`` is only ever read as an image, so neither may be anything else."""
    if not isinstance(image, dict):
        raise BloodcellInputError("the sidecar's 'image' is not an object", path)
    if not isinstance(image.get("file_name", ""), str):
        raise BloodcellInputError("the sidecar's image file_name is not text", path)
    for key in ("width", "height"):
        if image.get(key) is not None:
            whole(image[key], f"image {key}", path, low=1, high=10**7)
    digest = image.get("digest")
    if digest is not None and not is_hex_digest(digest):
        raise BloodcellInputError(f"image digest {str(digest)[:40]!r} is not a hexadecimal content hash", path)
    if image.get("path") is not None and not isinstance(image["path"], str):
        raise BloodcellInputError("the sidecar's image path is not text", path)
    return image


def table_from_snapshot(data: dict[str, Any], path: Path | None = None) -> AnnotationTable:
    """The table a sidecar describes, every column checked (a sidecar may come from another lab or be edited)."""
    try:
        cells = data["cells"]
        n = len(cells["id"])
        floats = lambda key: np.asarray([math.nan if v is None else v for v in cells[key]], dtype=np.float64).reshape(n)
        cols = {
            "id": np.asarray(cells["id"], dtype=np.int64).reshape(n),
            "box": np.asarray(cells["box"], dtype=np.float64).reshape(n, 4),
            "label": np.asarray(cells["label"], dtype=np.int64).reshape(n),
            **{name: floats(name) for name in FLOAT_COLUMNS},
            **{name: objects(list(cells[name])) for name in OBJECT_COLUMNS},
        }
        if any(len(v) != n for v in cols.values()):
            raise ValueError("columns differ in length")
        classes = [class_name(c, path) for c in data["classes"]]
        next_id = None if data.get("next_id") is None else whole(data["next_id"], "next_id", path, low=1)
        revision = whole(data.get("revision", 0), "revision", path, low=0)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise BloodcellInputError(f"malformed review sidecar ({one_line(exc)})", path) from None
    if not np.all(np.isfinite(cols["box"])) or (n and (cols["label"].min() < 0 or cols["label"].max() >= len(classes))):
        raise BloodcellInputError("malformed review sidecar: a box is not finite or a label is outside the classes",
                                  path)
    bad = [r for r in cols["review"] if r not in REVIEW_STATES]
    if bad:
        raise BloodcellInputError(f"unknown review state {str(bad[0])[:40]!r}; allowed: {', '.join(REVIEW_STATES)}",
                                  path)
    if len(set(cols["id"].tolist())) != n:
        raise BloodcellInputError("malformed review sidecar: object ids repeat", path)
    for name in ("flags", "attributes"):
        kind = list if name == "flags" else dict
        if any(v is not None and not isinstance(v, kind) for v in cols[name]):
            raise BloodcellInputError(f"malformed review sidecar: a cell's {name} is not a {kind.__name__}", path)
    assert set(cols) == set(COLUMNS)
    table = AnnotationTable(classes, Rows(cols), next_id=next_id)
    table.revision = revision
    signed = data.get("signed")
    table.signed = signed if isinstance(signed, dict) else None
    return table


class Autosaver:
    """Writes a table's sidecar after every change; with ``background=True`` the write runs on a thread that
    always writes the newest snapshot (so a burst of key presses costs one write, not one each). The thread waits
    ``delay`` seconds first: serialising 10,000 cells holds Python's GIL for tens of milliseconds, which would
    otherwise land in the middle of redrawing the viewer after the key press."""

    def __init__(self, project: ReviewProject, key: str, table: AnnotationTable, image: dict[str, Any],
                 background: bool = False, delay: float = 0.15) -> None:
        self.project, self.key, self.table, self.image = project, key, table, image
        self.background, self.delay = background, delay
        self.errors: list[str] = []
        self._pending: tuple | None = None
        self._lock = threading.Condition()
        self._idle = True
        self._thread: threading.Thread | None = None
        table.listeners.append(self._on_change)
        if background:  # napari quitting must not drop the last change waiting for the writer thread
            atexit.register(self.flush)

    @property
    def path(self) -> Path:
        return self.project.sidecar(self.key)

    def save_now(self) -> None:
        self._write(snapshot(self.table, self.image))

    def _on_change(self, kind: str, ids: np.ndarray) -> None:
        if not self.background:
            self._write(snapshot(self.table, self.image))
            return
        with self._lock:
            self._pending = capture(self.table)  # serialised on the writer thread
            self._idle = False
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="bloodcell-autosave", daemon=True)
                self._thread.start()
            self._lock.notify_all()

    def _run(self) -> None:
        while True:
            time.sleep(self.delay)  # let the key press finish drawing before serialising takes the GIL
            with self._lock:
                captured, self._pending = self._pending, None
                if captured is None:
                    self._idle = True
                    self._lock.notify_all()
                    return
            self._write(snapshot_of(captured, self.image))

    def _write(self, data: dict[str, Any]) -> None:
        try:
            write_snapshot(self.path, data)
        except (OSError, BloodcellInputError) as exc:  # shown by the widget; the edit itself is kept in memory
            self.errors.append(f"autosave to {self.path} failed: {exc}")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every change so far is on disk."""
        with self._lock:
            return self._lock.wait_for(lambda: self._idle and self._pending is None, timeout=timeout)

    def close(self) -> None:
        self.flush()
        atexit.unregister(self.flush)
        if self._on_change in self.table.listeners:
            self.table.listeners.remove(self._on_change)


def import_predictions(project: ReviewProject, aset: Any, replace: bool = False,
                       review_default: str = "unreviewed") -> list[str]:
    """Start reviews from detections (e.g. ``bloodcell detect`` output): one table per image, its boxes
    ``unreviewed`` unless the file says otherwise (``review_default="accepted"`` for ground truth drawn by people).

    An image that already has a review keeps it unless ``replace`` is given, because that review holds a
    person's work.
    """
    keys = []
    for rec in aset.images:
        if rec.path is None:
            raise BloodcellInputError(f"image {rec.file_name} was not found on disk; the review needs its pixels")
        digest = image_digest(rec.path)
        key = image_key(rec.file_name, digest)
        if project.sidecar(key).exists() and not replace:
            keys.append(key)
            continue
        table = AnnotationTable.from_record(rec, list(aset.classes), review_default=review_default)
        image = {"file_name": rec.file_name, "width": rec.width, "height": rec.height,
                 "path": str(Path(rec.path).resolve()), "digest": digest}
        project.save(key, table, image)
        keys.append(key)
    return keys
