"""The annotation table of one image under review, with undo/redo and provenance.

napari has undo only for Labels layers, so the history of boxes lives here, not in a layer: every change (add,
delete, move/resize, class change, accept/reject, multi-label flags) is one :class:`Edit` holding the affected rows
before and after, so undo and redo are the same operation in opposite directions and cost as much as the change,
not as much as the table. Each object keeps a stable ``id``, who made it (``source``: a model id or a person),
who last changed it and when (``changed_by``/``changed``), and its review state. Columns are numpy arrays so a
class change on a thousand selected cells is one fancy-indexed assignment.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .boxes import as_boxes
from .errors import BloodcellInputError
from .io.records import REVIEW_STATES, ImageRecord

COLUMNS = ("id", "box", "label", "score", "margin", "flags", "source", "review", "created", "changed", "changed_by",
           "attributes")
FLOAT_COLUMNS = ("score", "margin", "created", "changed")
"""NaN where unknown."""
OBJECT_COLUMNS = ("flags", "source", "review", "changed_by", "attributes")
"""Python values (lists, strings, dicts) in object arrays."""
HUMAN_STATES = ("accepted", "corrected", "rejected", "not_classed")
UNCERTAIN_SCORE = 0.6
"""Default: a model box below this confidence (or, once classified, below half this margin) is uncertain."""


def _empty_column(name: str, n: int = 0) -> np.ndarray:
    if name == "box":
        return np.zeros((n, 4), dtype=np.float64)
    if name in ("id", "label"):
        return np.zeros(n, dtype=np.int64)
    if name in FLOAT_COLUMNS:
        return np.full(n, math.nan)
    return np.empty(n, dtype=object)


@dataclasses.dataclass
class Rows:
    """A column-wise slice of the table (also the whole table)."""

    columns: dict[str, np.ndarray]

    @classmethod
    def empty(cls) -> Rows:
        return cls({name: _empty_column(name) for name in COLUMNS})

    def __len__(self) -> int:
        return len(self.columns["id"])

    def take(self, index: np.ndarray) -> Rows:
        return Rows({k: v[index].copy() for k, v in self.columns.items()})

    def copy(self) -> Rows:
        return Rows({k: v.copy() for k, v in self.columns.items()})


@dataclasses.dataclass
class Edit:
    """One undoable change: the affected rows as they were and as they became (absent = did not exist)."""

    kind: str
    by: str
    at: float
    before: Rows
    after: Rows

    def summary(self) -> dict[str, Any]:
        ids = sorted(set(self.before.columns["id"].tolist()) | set(self.after.columns["id"].tolist()))
        return {"kind": self.kind, "by": self.by, "at": self.at, "ids": ids[:50], "n": len(ids)}


Listener = Callable[[str, np.ndarray], None]
"""Called after every change with the kind (``add|delete|move|class|review|flags|undo|redo|load``) and the ids."""


class AnnotationTable:
    """The objects of one image, their history and their sign-off."""

    def __init__(self, classes: list[str], rows: Rows | None = None, next_id: int | None = None) -> None:
        if not classes:
            raise BloodcellInputError("an annotation table needs at least one class")
        self.classes = list(classes)
        self.rows = rows if rows is not None else Rows.empty()
        self.next_id = int(next_id if next_id is not None else (self.rows.columns["id"].max() + 1 if len(self.rows) else 1))
        self.undo_stack: list[Edit] = []
        self.redo_stack: list[Edit] = []
        self.revision = 0
        self.signed: dict[str, Any] | None = None
        self.listeners: list[Listener] = []
        self._index: dict[int, int] = {}
        self._reindex()

    # -- reading -------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, object_id: object) -> bool:
        return isinstance(object_id, int | np.integer) and int(object_id) in self._index

    def col(self, name: str) -> np.ndarray:
        return self.rows.columns[name]

    @property
    def ids(self) -> np.ndarray:
        return self.rows.columns["id"]

    def positions(self, ids: Iterable[int]) -> np.ndarray:
        """Row positions of ``ids``; an unknown id is an error (a stale selection must not edit the wrong cell)."""
        try:
            return np.fromiter((self._index[int(i)] for i in ids), dtype=np.int64)
        except KeyError as exc:
            raise BloodcellInputError(f"no object with id {exc.args[0]} in this image (it was deleted)") from None

    def active_mask(self) -> np.ndarray:
        """Objects that count: everything except boxes rejected as not being cells."""
        return self.col("review") != "rejected"

    def object_info(self, object_id: int) -> dict[str, Any]:
        """Everything known about one object, for the widget and for provenance questions."""
        p = int(self.positions([object_id])[0])
        c = self.rows.columns
        return {
            "id": int(c["id"][p]), "box": c["box"][p].tolist(), "class": self.classes[int(c["label"][p])],
            "score": float(c["score"][p]), "margin": float(c["margin"][p]), "flags": list(c["flags"][p] or []),
            "source": c["source"][p], "review": c["review"][p], "created": float(c["created"][p]),
            "changed": float(c["changed"][p]), "changed_by": c["changed_by"][p], "attributes": dict(c["attributes"][p] or {}),
        }

    # -- changing ------------------------------------------------------------------------------------------------
    def add(self, boxes: Any, labels: Any, by: str, *, scores: Any = None, margins: Any = None,
            review: str = "corrected", flags: list[list[str]] | None = None,
            attributes: list[dict[str, Any]] | None = None, now: float | None = None) -> np.ndarray:
        """Add objects made by ``by`` (a person, or a model id with ``review='unreviewed'``); returns their ids."""
        boxes = as_boxes(boxes)
        n = len(boxes)
        labels = np.atleast_1d(np.asarray(labels, dtype=object))
        labels = np.broadcast_to(np.asarray([self.class_index(v) for v in labels], dtype=np.int64), (n,))
        self._check_state(review)
        now = time.time() if now is None else now
        ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        new = Rows.empty().columns
        new.update(
            id=ids, box=boxes.copy(), label=labels.copy(),
            score=np.full(n, math.nan) if scores is None else np.asarray(scores, dtype=np.float64).reshape(n),
            margin=np.full(n, math.nan) if margins is None else np.asarray(margins, dtype=np.float64).reshape(n),
            created=np.full(n, now), changed=np.full(n, now),
        )
        new["flags"] = objects([list(f) for f in flags] if flags else [[] for _ in range(n)])
        new["attributes"] = objects([dict(a) for a in attributes] if attributes else [{} for _ in range(n)])
        for name in ("source", "changed_by"):
            new[name] = objects([by] * n)
        new["review"] = objects([review] * n)
        self.next_id += n
        self._commit(Edit("add", by, now, Rows.empty(), Rows(new)))
        return ids

    def delete(self, ids: Iterable[int], by: str) -> None:
        """Remove objects from the table (undo brings them back); a model's false detection is better *rejected*,
        which keeps who made it and who rejected it."""
        pos = self.positions(ids)
        if len(pos):
            self._commit(Edit("delete", by, time.time(), self.rows.take(pos), Rows.empty()))

    def move(self, ids: Iterable[int], boxes: Any, by: str) -> None:
        """Move or resize boxes; a model box a person fixes becomes ``corrected``."""
        boxes = as_boxes(boxes)
        self._change("move", ids, by, lambda c: (c.__setitem__("box", boxes.copy()), _mark_corrected(c)))

    def set_class(self, ids: Iterable[int], label: int | str, by: str) -> None:
        """Assign a class: a changed class makes the cell ``corrected``, the same class ``accepted``."""
        label = self.class_index(label)

        def apply(c: dict[str, np.ndarray]) -> None:
            changed = c["label"] != label
            for k in np.flatnonzero(changed & np.isin(c["review"], ("unreviewed", "accepted"))):
                first = c["attributes"][k] or {}
                if "model_class" not in first:  # the pre-classification, for model-reviewer agreement
                    c["attributes"][k] = {**first, "model_class": self.classes[int(c["label"][k])]}
            c["review"][changed] = "corrected"
            c["review"][~changed & np.isin(c["review"], ("unreviewed", "not_classed"))] = "accepted"
            c["label"][:] = label

        self._change("class", ids, by, apply)

    def set_review(self, ids: Iterable[int], state: str, by: str) -> None:
        self._check_state(state)
        self._change("review", ids, by, lambda c: c["review"].__setitem__(slice(None), state))

    def set_flags(self, ids: Iterable[int], flags: list[str], by: str) -> None:
        """Give cells a set of co-occurring labels (e.g. red-cell morphologies), replacing their earlier set."""
        def apply(c: dict[str, np.ndarray]) -> None:
            for k in range(len(c["flags"])):
                c["flags"][k] = list(flags)
            _mark_corrected(c)

        self._change("flags", ids, by, apply)

    def undo(self) -> Edit | None:
        """Take back the last change (None when there is nothing to undo)."""
        return self._replay(self.undo_stack, self.redo_stack, "undo")

    def redo(self) -> Edit | None:
        return self._replay(self.redo_stack, self.undo_stack, "redo")

    def _replay(self, source: list[Edit], target: list[Edit], kind: str) -> Edit | None:
        if not source:
            return None
        edit = source.pop()
        old, new = (edit.after, edit.before) if kind == "undo" else (edit.before, edit.after)
        self._apply(old, new)
        target.append(edit)
        self._changed(kind, edit)
        return edit

    # -- review --------------------------------------------------------------------------------------------------
    def uncertainty(self) -> np.ndarray:
        """Lower is less certain: the classifier's margin where there is one, else the detector's score."""
        margin, score = self.col("margin"), self.col("score")
        return np.where(np.isnan(margin), np.nan_to_num(score, nan=1.0), margin * 2)

    def uncertain_mask(self, below: float = UNCERTAIN_SCORE) -> np.ndarray:
        return self.uncertainty() < below

    def queue(self, only_unreviewed: bool = True) -> np.ndarray:
        """Ids in review order: least certain first (ties by position), rejected cells left out."""
        keep = self.active_mask()
        if only_unreviewed:
            keep &= self.col("review") == "unreviewed"
        pos = np.flatnonzero(keep)
        order = np.lexsort((pos, self.uncertainty()[pos]))
        return self.ids[pos[order]]

    def blocking_signoff(self, below: float = UNCERTAIN_SCORE) -> np.ndarray:
        """Ids of unreviewed uncertain cells, which must be seen before the image can be signed."""
        return self.ids[(self.col("review") == "unreviewed") & self.uncertain_mask(below)]

    def sign(self, by: str, below: float = UNCERTAIN_SCORE) -> dict[str, Any]:
        blocking = self.blocking_signoff(below)
        if len(blocking):
            raise BloodcellInputError(
                f"cannot sign: {len(blocking)} uncertain cell(s) are still unreviewed (confidence below {below:g}); "
                "accept, reclassify or reject them first"
            )
        if not by.strip():
            raise BloodcellInputError("cannot sign without a reviewer name")
        self.signed = {"by": by, "at": time.time(), "revision": self.revision, "threshold": below}
        self._notify("sign", np.zeros(0, dtype=np.int64))
        return self.signed

    @property
    def signature_valid(self) -> bool:
        """A sign-off covers the table as it was; any later change voids it (it stays in the record)."""
        return self.signed is not None and self.signed.get("revision") == self.revision

    # -- conversion ----------------------------------------------------------------------------------------------
    def class_index(self, label: int | str) -> int:
        if isinstance(label, str | np.str_):
            if label not in self.classes:
                raise BloodcellInputError(f"unknown class {label!r}; the classes are {self.classes}")
            return self.classes.index(label)
        label = int(label)
        if not 0 <= label < len(self.classes):
            raise BloodcellInputError(f"class number {label + 1} does not exist; there are {len(self.classes)} classes")
        return label

    @classmethod
    def from_record(cls, record: ImageRecord, classes: list[str], review_default: str = "unreviewed") -> AnnotationTable:
        """A table from boxes read from a file or made by a detector (no history: this is the starting point)."""
        table = cls(classes)
        n = len(record)
        now = time.time()
        attrs = record.attribute_list()
        cols = Rows.empty().columns
        cols.update(
            id=np.arange(1, n + 1, dtype=np.int64), box=record.boxes.copy(), label=record.labels.copy(),
            score=np.asarray(record.score_list(), dtype=np.float64),
            margin=np.asarray([float(a.pop("margin", math.nan)) for a in attrs], dtype=np.float64),
            created=np.asarray([_from_iso(a.pop("created", None), now) for a in attrs]),
            changed=np.asarray([_from_iso(a.pop("changed", None), now) for a in attrs]),
        )
        sources = record.source_list()
        cols.update(
            flags=objects([list(a.pop("labels", []) or []) for a in attrs]),
            source=objects(sources),
            review=objects(record.review_list(review_default)),
            changed_by=objects([a.pop("changed_by", None) or s for a, s in zip(attrs, sources)]),
        )
        for a in attrs:  # provenance written by to_record is rebuilt, not nested again
            a.pop("object_id", None)
        cols["attributes"] = objects(attrs)
        table.rows = Rows(cols)
        table.next_id = n + 1
        table._reindex()
        return table

    def to_record(self, file_name: str, width: int, height: int, path: Any = None,
                  include: Iterable[str] = HUMAN_STATES + ("unreviewed",)) -> ImageRecord:
        """The objects in the given review states as an :class:`ImageRecord` (provenance in the attributes)."""
        keep = np.isin(self.col("review"), list(include))
        c = self.rows.columns
        idx = np.flatnonzero(keep)
        attrs = []
        for p in idx:
            a = dict(c["attributes"][p] or {})
            a.update(object_id=int(c["id"][p]), changed_by=c["changed_by"][p], changed=_iso(c["changed"][p]),
                     created=_iso(c["created"][p]))
            if c["flags"][p]:
                a["labels"] = list(c["flags"][p])
            if not math.isnan(c["margin"][p]):
                a["margin"] = float(c["margin"][p])
            attrs.append(a)
        scores = c["score"][idx]
        return ImageRecord(
            file_name=file_name, width=width, height=height, boxes=c["box"][idx], labels=c["label"][idx],
            scores=None if np.all(np.isnan(scores)) else scores, sources=list(c["source"][idx]),
            reviews=list(c["review"][idx]), attributes=attrs, path=path,
        )

    # -- internals -----------------------------------------------------------------------------------------------
    @staticmethod
    def _check_state(state: str) -> None:
        if state not in REVIEW_STATES:
            raise BloodcellInputError(f"unknown review state {state!r}; allowed: {', '.join(REVIEW_STATES)}")

    def _change(self, kind: str, ids: Iterable[int], by: str, apply: Callable[[dict[str, np.ndarray]], Any]) -> None:
        pos = self.positions(ids)
        if not len(pos):
            return
        before = self.rows.take(pos)
        after = before.copy()
        apply(after.columns)
        now = time.time()
        after.columns["changed"][:] = now
        after.columns["changed_by"][:] = by
        self._commit(Edit(kind, by, now, before, after))

    def _commit(self, edit: Edit) -> None:
        self._apply(edit.before, edit.after)
        self.undo_stack.append(edit)
        self.redo_stack.clear()
        self._changed(edit.kind, edit)

    def _apply(self, old: Rows, new: Rows) -> None:
        """Replace the rows ``old`` by ``new``: ids only in ``old`` go, ids in ``new`` are written or inserted."""
        new_ids = new.columns["id"]
        gone = np.setdiff1d(old.columns["id"], new_ids)
        if len(gone):
            keep = np.ones(len(self.rows), dtype=bool)
            keep[self.positions(gone)] = False
            self.rows = self.rows.take(np.flatnonzero(keep))
            self._reindex()
        if not len(new_ids):
            return
        known = np.fromiter((int(i) in self._index for i in new_ids), dtype=bool, count=len(new_ids))
        if known.any():
            pos = self.positions(new_ids[known])
            for name, column in self.rows.columns.items():
                column[pos] = new.columns[name][known]
        if (~known).any():
            fresh = new.take(np.flatnonzero(~known))
            merged = {k: np.concatenate([v, fresh.columns[k]]) for k, v in self.rows.columns.items()}
            order = np.argsort(merged["id"], kind="stable")  # undone deletions return to their place
            self.rows = Rows({k: v[order] for k, v in merged.items()})
            self._reindex()

    def _reindex(self) -> None:
        self._index = {int(i): k for k, i in enumerate(self.rows.columns["id"].tolist())}

    def _changed(self, kind: str, edit: Edit) -> None:
        self.revision += 1
        ids = np.union1d(edit.before.columns["id"], edit.after.columns["id"])
        self._notify(kind, ids)

    def _notify(self, kind: str, ids: np.ndarray) -> None:
        for listener in list(self.listeners):
            listener(kind, ids)


def objects(values: list[Any]) -> np.ndarray:
    """A 1-D object array (``np.array`` of lists would make a 2-D array)."""
    out = np.empty(len(values), dtype=object)
    for k, value in enumerate(values):
        out[k] = value
    return out


def _mark_corrected(c: dict[str, np.ndarray]) -> None:
    c["review"][np.isin(c["review"], ("unreviewed", "accepted"))] = "corrected"


def _iso(t: float) -> str | None:
    if t is None or (isinstance(t, float) and math.isnan(t)):
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(float(t)))


def _from_iso(text: str | None, default: float) -> float:
    if not text:
        return default
    try:
        return time.mktime(time.strptime(str(text), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return default
