"""The pool to choose from and the suggestions made: unreviewed fields of a folder, a review project or a case.

Fields already done (signed) are not suggested; their embeddings anchor ``diversity`` and ``combined``, so the
first suggestion is unlike what was reviewed before. With a classifier the unit is the cell: the unreviewed cells
of the pool's fields (from their reviews, or from an annotation file for a plain folder) are scored and ranked
the same way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BloodcellInputError

MAX_ANCHORS = 200
"""Most reviewed fields embedded as anchors (an even sample of them beyond this): each costs one model pass."""
MAX_POOL = 100_000


@dataclasses.dataclass
class PoolField:
    name: str
    candidates: tuple[str, ...]
    """Where its image may be: paths read from a case or a sidecar are hints, checked in the job (see
    :func:`resolve`), never on the GUI thread."""
    key: str | None = None
    """The field's key in the review project, when the pool came from one."""
    digest: str | None = None
    """The content hash its review recorded: an image at a hinted path must still have it."""
    boxes: np.ndarray | None = None
    """Cells to score with a classifier (xyxy pixels), their ids in the field's review (or row numbers) and their
    class names."""
    cell_ids: np.ndarray | None = None
    labels: list[str] | None = None
    size: tuple[int, int] | None = None
    """``(width, height)`` an annotation file gave for the image: its boxes are used only if the image matches."""


@dataclasses.dataclass
class Pool:
    fields: list[PoolField]
    reviewed: list[PoolField]
    source: str
    skipped: list[str] = dataclasses.field(default_factory=list)
    """Fields left out, with why (an image that cannot be found or read)."""
    project: Any = None
    """The review project, whose kept pixels stand in for a moved image."""


def folder_pool(folder: str | Path, boxes: Any = None) -> Pool:
    """Every image of a folder (or the files named); ``boxes`` (an AnnotationSet) gives their cells, matched by
    file name (else by stem when that is unambiguous) and used only where the image has the size they state."""
    from ..cases import expand_images

    files = expand_images([folder] if isinstance(folder, (str, Path)) else list(folder))
    if len(files) > MAX_POOL:
        raise BloodcellInputError(f"holds {len(files)} images; a pool holds at most {MAX_POOL}", Path(str(folder)))
    by_name, by_stem = {}, {}
    if boxes is not None:
        for r in boxes.images:
            by_name[Path(r.file_name).name] = r
            by_stem.setdefault(Path(r.file_name).stem, []).append(r)
    fields = []
    for path in files:
        rec = by_name.get(path.name)
        if rec is None and len(by_stem.get(path.stem, [])) == 1:  # two records of one stem: neither is trusted
            rec = by_stem[path.stem][0]
        item = PoolField(path.name, (str(path),))
        if rec is not None:
            item.boxes = np.asarray(rec.boxes, dtype=np.float64).reshape(-1, 4)
            item.cell_ids = np.arange(len(item.boxes))
            item.labels = [boxes.classes[int(i)] for i in rec.labels]
            item.size = (int(rec.width), int(rec.height))
        fields.append(item)
    return Pool(fields, [], str(folder))


def _cells(table: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from ..annotations import HUMAN_STATES

    keep = table.active_mask() & ~np.isin(table.col("review"), HUMAN_STATES)
    labels = [table.classes[int(i)] for i in table.col("label")[keep]]
    return np.asarray(table.col("box")[keep], dtype=np.float64).reshape(-1, 4), table.ids[keep], labels


def project_pool(project: Any, case: str | None = None) -> Pool:
    """The fields of a review project (or of one of its cases) not yet done; done ones are the anchors."""
    from ..cases import Case

    if case is not None:
        loaded = Case.open(project, case).tables()
        return entries_pool([(f.key, f.file_name, (f.path, (image or {}).get("path")), f.digest, table)
                             for f, table, image in loaded], project, f"{project.folder} case {case}")
    return entries_pool([(key, str(image.get("file_name", key)), (image.get("path"),), image.get("digest"), table)
                         for key, table, image in project.load_all()], project, str(project.folder))


def entries_pool(entries: list[tuple[str, str, tuple, Any, Any]], project: Any, source: str) -> Pool:
    """A pool from ``(key, file name, candidate image paths, digest, review table or None)`` per field (a case
    the Review widget holds in memory, or sidecars read from disk). No file is touched here: :func:`resolve`
    finds each image in the job."""
    from ..cases import field_state

    pool, reviewed = [], []
    for key, name, paths, digest, table in entries:
        item = PoolField(str(name), tuple(str(p) for p in paths if isinstance(p, str) and p), str(key),
                         digest if isinstance(digest, str) else None)
        if table is not None:
            item.boxes, item.cell_ids, item.labels = _cells(table)
        (reviewed if field_state(table) == "done" else pool).append(item)
    return Pool(pool, reviewed, source, [], project)


def resolve(field: PoolField, project: Any = None) -> Path:
    """The field's image: the first hinted path that is a file with the recorded content hash, else the copy of
    its pixels the project kept; one line saying why when there is none."""
    from ..review_project import image_digest

    changed, unreadable = None, None
    for text in field.candidates:
        path = Path(text)
        try:
            if path.is_file():
                if field.digest is None or image_digest(path) == field.digest:
                    return path
                changed = path
        except OSError as exc:  # a folder we may not enter, a name too long, a disk error
            unreadable = BloodcellInputError(f"cannot be read ({exc.strerror or type(exc).__name__})", path)
    kept = None
    if project is not None and field.digest is not None:
        try:
            kept = project.kept_image(field.digest)
        except BloodcellInputError:  # a digest that is not one (a hand-edited sidecar)
            kept = None
    if kept is not None:
        return kept
    if changed is not None:
        raise BloodcellInputError("has changed since it was reviewed (its content hash differs)", changed)
    if unreadable is not None:
        raise unreadable
    where = ", ".join(field.candidates) or "no path recorded"
    raise BloodcellInputError(f"the image of {field.name} is not found ({where})")
