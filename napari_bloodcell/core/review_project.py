"""A review project folder: one autosaved sidecar per image, restored when the image is opened again.

Layout::

    PROJECT/project.json           name, who created it, when
    PROJECT/images/<stem>-<hash>.json   the annotation table of one image (column-wise JSON), its sign-off and
                                   the last edits; the key holds the image's content hash, so the same picture
                                   finds its review again wherever it is opened from
    PROJECT/images/<stem>-<hash>.log.jsonl   the changes made since that snapshot, one JSON line each

A snapshot of 100,000 cells takes seconds to serialise, so the GUI's :class:`Autosaver` appends only the cells each
change touched to the change log (one line, written at once) and rewrites the snapshot when the review closes or
the log has grown past the snapshot. :meth:`ReviewProject.load` reads the snapshot and replays the log lines made
for it (each names the snapshot's ``log_id``; a damaged line is skipped: a torn last line from a crash loses that
one change, and the review resumed after it starts its next line on a line of its own). Snapshots are written
atomically (temporary file + rename). The write runs on a background thread in the GUI so a key press never waits
for the disk; what is written (a change's cells, or the whole table for a snapshot) is taken on the caller's
thread, in the table's listener, so later edits cannot tear it.

A whole-slide field is reviewed a region at a time: :func:`split_region` gives the region's cells as their own
table and keeps the rest aside, and the autosaver writes both back together, so no cell outside is lost.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import threading
import time
import uuid
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
from .image_identity import identity_digest as identity_digest  # part of this module's API
from .image_identity import image_digest as image_digest  # part of this module's API
from .io.records import REVIEW_STATES
from .review_log import split_region as split_region  # part of this module's API
from .untrusted import (
    class_name,
    image_file,
    inside,
    is_hex_digest,
    json_text,
    load_json,
    one_line,
    parse_json,
    read_text,
    whole,
)

FORMAT = "napari-bloodcell/review"
PROJECT_FORMAT = "napari-bloodcell/review-project"
HISTORY_KEPT = 200
LOG_SUFFIX = ".log.jsonl"
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
        self.log_ids: dict[str, str | None] = {}
        """The snapshot each :meth:`load` read, by key: an :class:`Autosaver` resumes its change log."""
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

    def change_log(self, key: str) -> Path:
        return self.folder / "images" / f"{key}{LOG_SUFFIX}"

    def save(self, key: str, table: AnnotationTable, image: dict[str, Any]) -> Path:
        """A whole snapshot; the change log it supersedes is removed."""
        out = write_snapshot(self.sidecar(key), snapshot(table, image))
        self.change_log(key).unlink(missing_ok=True)
        return out

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
        table = table_from_snapshot(data, path)
        replay_log(table, self.change_log(key), data.get("log_id"))
        self.log_ids[key] = data.get("log_id")
        return table, checked_image(data.get("image"), path)

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


def snapshot_of(captured: tuple, image: dict[str, Any], outside: Rows | None = None,
                log_id: str | None = None) -> dict[str, Any]:
    """``outside``: the field's cells outside the region under review, written back beside the region's."""
    rows, classes, next_id, revision, signed, edits = captured
    if outside is not None and len(outside):
        merged = {k: np.concatenate([outside.columns[k], v]) for k, v in rows.columns.items()}
        order = np.argsort(merged["id"], kind="stable")
        rows = Rows({k: v[order] for k, v in merged.items()})
    cells = rows_json(rows)
    return {
        "format": FORMAT, "version": 1, "saved": time.time(), "image": image, "classes": classes,
        "next_id": next_id, "revision": revision, "signed": signed, "log_id": log_id or uuid.uuid4().hex,
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
        floats = lambda key: np.asarray(cells[key], dtype=np.float64).reshape(n)  # null becomes NaN
        cols = {
            "id": np.asarray(cells["id"], dtype=np.int64).reshape(n),
            "box": np.asarray(cells["box"], dtype=np.float64).reshape(n, 4),
            "label": np.asarray(cells["label"], dtype=np.int64).reshape(n),
            **{name: floats(name) for name in FLOAT_COLUMNS},
            **{name: _object_column(cells[name], n) for name in OBJECT_COLUMNS},
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
    try:  # one set of the states, not a lookup per cell (100,000 of them)
        bad = sorted(str(r) for r in set(cols["review"].tolist()) - set(REVIEW_STATES))
    except TypeError:  # a list or an object where a state should be
        bad = ["(not a text)"]
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


def _object_column(values: list, n: int) -> np.ndarray:
    """A 1-D object column, made by numpy in one go when it can (strings, dicts: 5 columns of 100,000 cells took
    150 ms one by one); lists, which numpy would stack into a 2-D array, one by one."""
    column = np.array(values, dtype=object) if values and not isinstance(values[0], list) else None
    return column if column is not None and column.shape == (n,) else objects(list(values))


def rows_json(rows: Rows) -> dict[str, list]:
    """Rows as the sidecar's column-wise ``cells``."""
    c = rows.columns
    return {
        "id": c["id"].tolist(), "box": np.round(c["box"], 3).tolist(), "label": c["label"].tolist(),
        **{name: [None if math.isnan(v) else v for v in c[name].tolist()] for name in FLOAT_COLUMNS},
        **{name: list(c[name]) for name in OBJECT_COLUMNS},
    }


def replay_log(table: AnnotationTable, path: Path, log_id: str | None) -> int:
    """Apply the change-log lines written for snapshot ``log_id`` to ``table`` (read from that snapshot); returns
    how many. Lines of another snapshot (a crash between compaction and the log's removal) are skipped, and so is a
    damaged line (a crash while it was written: only the change being written is lost; or an edit by hand)."""
    if log_id is None or not path.is_file():
        return 0
    applied = 0
    for line in read_text(path).splitlines():
        entry = _log_entry(table, line, log_id, path)
        if entry is None:
            continue
        gone, changed, next_id, revision, signed = entry
        gone = [i for i in gone if i in table]
        table._apply(table.rows.take(table.positions(gone)) if gone else Rows.empty(), changed)
        table.next_id = max(table.next_id, next_id)
        table.revision = revision if revision is not None else table.revision
        table.signed = signed
        applied += 1
    return applied


def _log_entry(table: AnnotationTable, line: str, log_id: str, path: Path) -> tuple | None:
    """One change-log line, every field checked: (removed ids, changed rows, next_id, revision, signed), or None
    when it belongs to another snapshot or is damaged."""
    try:
        entry = parse_json(line, path)
        if not isinstance(entry, dict) or entry.get("log_id") != log_id:
            return None
        changed = table_from_snapshot({"cells": entry["cells"], "classes": table.classes}, path).rows
        removed = entry.get("removed", [])
        if not isinstance(removed, list):
            return None
        gone = [whole(i, "a removed id", path) for i in removed]
        next_id = whole(entry.get("next_id", 0), "next_id", path, low=0)
        revision = entry.get("revision")
        revision = None if revision is None else whole(revision, "revision", path, low=0)
        signed = entry.get("signed")
        if signed is not None and not isinstance(signed, dict):
            return None
    except (ValueError, KeyError, TypeError, BloodcellInputError):
        return None
    return gone, changed, next_id, revision, signed


class Autosaver:
    """Keeps a table's sidecar up to date after every change.

    With ``background=True`` (the GUI) a change appends the cells it touched to the change log on a writer thread
    (a few milliseconds for a thousand cells, whatever the table's size); the whole snapshot is rewritten on
    :meth:`close` and whenever the log has outgrown it. Without, every change rewrites the snapshot at once.
    Whatever is written (a change's cells, a whole snapshot's columns) is taken on the thread that edits the table,
    in the listener, so the writer thread never reads the table while an edit changes it.
    ``outside`` holds the field's cells outside the region under review, written back with the region's."""

    def __init__(self, project: ReviewProject, key: str, table: AnnotationTable, image: dict[str, Any],
                 background: bool = False, delay: float = 0.15, outside: Rows | None = None) -> None:
        self.project, self.key, self.table, self.image = project, key, table, image
        self.background, self.delay, self.outside = background, delay, outside
        self.errors: list[str] = []
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Condition()
        self._idle = True
        self._thread: threading.Thread | None = None
        self.log_id: str | None = None
        """The snapshot on disk that the change log extends (None: write a snapshot first)."""
        self._want_snapshot = True
        """Set by the writer thread when the next change should be captured whole (no snapshot yet, or the log
        has outgrown it); read and cleared by the editing thread."""
        self._newline_first = False
        """The log ends in a torn line (a crash mid-write): the next append starts a line of its own."""
        self._changes = 0
        self._log_bytes = 0
        self._snapshot_bytes = 0
        table.listeners.append(self._on_change)
        if background:  # napari quitting must not drop the last change waiting for the writer thread
            atexit.register(self.flush)

    @property
    def path(self) -> Path:
        return self.project.sidecar(self.key)

    def resume(self, log_id: str | None) -> None:
        """The table was just loaded from a snapshot with this ``log_id`` (and its log): keep appending to it."""
        self.log_id = log_id
        self._want_snapshot = log_id is None
        log = self.project.change_log(self.key)
        self._log_bytes = log.stat().st_size if log.is_file() else 0
        self._newline_first = self._log_bytes > 0 and _last_byte(log) != b"\n"
        self._snapshot_bytes = self.path.stat().st_size if self.path.is_file() else 0

    def save_now(self) -> None:
        self._write_snapshot(capture(self.table))

    def _on_change(self, kind: str, ids: np.ndarray) -> None:
        if not self.background:
            self.save_now()
            return
        t = self.table
        self._changes += 1
        with self._lock:
            whole_table, self._want_snapshot = self._want_snapshot, False
        if whole_table:  # on this (the editing) thread: a capture on the writer's could tear
            entry: dict[str, Any] = {"captured": capture(t)}
        else:
            present = np.asarray([i for i in ids.tolist() if int(i) in t], dtype=np.int64)
            entry = {"kind": kind, "ids": ids, "rows": t.rows.take(t.positions(present)) if len(present)
                     else Rows.empty(), "removed": np.setdiff1d(ids, present), "next_id": t.next_id,
                     "revision": t.revision, "signed": dict(t.signed) if t.signed else None, "at": time.time()}
        with self._lock:
            self._pending.append(entry)
            self._idle = False
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="bloodcell-autosave", daemon=True)
                self._thread.start()
            self._lock.notify_all()

    def _run(self) -> None:
        while True:
            time.sleep(self.delay)  # let the key press finish drawing before serialising takes the GIL
            with self._lock:
                entries, self._pending = self._pending, []
                if not entries:
                    self._idle = True
                    self._lock.notify_all()
                    return
            while entries:
                if "captured" in entries[0]:
                    self._write_snapshot(entries.pop(0)["captured"])
                    continue
                changes = []
                while entries and "captured" not in entries[0]:
                    changes.append(entries.pop(0))
                self._append(changes)

    def _append(self, entries: list[dict[str, Any]]) -> None:
        if self.log_id is None:  # no snapshot this log could extend (its writing failed): capture the next change
            with self._lock:
                self._want_snapshot = True
            return
        lines = []
        for e in entries:
            lines.append(json_text({
                "log_id": self.log_id, "kind": e["kind"], "at": e["at"], "cells": rows_json(e["rows"]),
                "removed": e["removed"].tolist(), "next_id": e["next_id"], "revision": e["revision"],
                "signed": e["signed"]}, separators=(",", ":"), default=str))
        text = ("\n" if self._newline_first else "") + "\n".join(lines) + "\n"
        try:
            with open(self.project.change_log(self.key), "a", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            self.errors.append(f"autosave to {self.project.change_log(self.key)} failed: {exc}")
            return
        self._newline_first = False
        self._log_bytes += len(text)
        if self._log_bytes > max(self._snapshot_bytes, 1 << 20):  # the next change is captured whole
            with self._lock:
                self._want_snapshot = True

    def _write_snapshot(self, captured: tuple) -> None:
        log_id = uuid.uuid4().hex
        try:
            write_snapshot(self.path, snapshot_of(captured, self.image, self.outside, log_id))
            self._snapshot_bytes = self.path.stat().st_size
        except (OSError, BloodcellInputError) as exc:  # shown by the widget; the edit itself is kept in memory
            self.errors.append(f"autosave to {self.path} failed: {exc}")
            return
        # the snapshot on disk now names log_id: lines of the old log are skipped even if it cannot be removed
        self.log_id, self._log_bytes, self._newline_first = log_id, 0, False
        with self._lock:
            self._want_snapshot = False
        try:
            self.project.change_log(self.key).unlink(missing_ok=True)
        except OSError as exc:
            self.errors.append(f"autosave could not remove {self.project.change_log(self.key)}: {exc}")
            self._newline_first = True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every change so far is on disk."""
        with self._lock:
            return self._lock.wait_for(lambda: self._idle and not self._pending, timeout=timeout)

    def close(self) -> None:
        """Write the last changes and fold the change log into one snapshot."""
        self.flush(timeout=60.0)
        atexit.unregister(self.flush)
        if self._on_change in self.table.listeners:
            self.table.listeners.remove(self._on_change)
        if self.background and (self._log_bytes or (self.log_id is None and self._changes)):  # on this thread
            self._write_snapshot(capture(self.table))


def _last_byte(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1)
    except OSError:
        return b""


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
