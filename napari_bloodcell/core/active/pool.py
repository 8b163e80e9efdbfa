"""The pool to choose from and the suggestions made: unreviewed fields of a folder, a review project or a case.

Fields already done (signed) are not suggested; their embeddings anchor ``diversity`` and ``combined``, so the
first suggestion is unlike what was reviewed before. With a classifier the unit is the cell: the unreviewed cells
of the pool's fields (from their reviews, or from an annotation file for a plain folder) are scored and ranked
the same way.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BloodcellInputError
from ..progress import Progress
from .acquisition import DEFAULT_STRATEGY, STRATEGIES, select

MAX_ANCHORS = 200
"""Most reviewed fields embedded as anchors (an even sample of them beyond this): each costs one model pass."""
MAX_POOL = 100_000


@dataclasses.dataclass
class PoolField:
    name: str
    path: Path
    key: str | None = None
    """The field's key in the review project, when the pool came from one."""
    boxes: np.ndarray | None = None
    """Cells to score with a classifier (xyxy pixels), and their ids in the field's review (or row numbers)."""
    cell_ids: np.ndarray | None = None


@dataclasses.dataclass
class Pool:
    fields: list[PoolField]
    reviewed: list[PoolField]
    source: str
    skipped: list[str] = dataclasses.field(default_factory=list)
    """Fields left out, with why (an image that cannot be found)."""


@dataclasses.dataclass
class Suggestion:
    rank: int
    name: str
    path: str
    key: str | None
    score: float
    """What the strategy maximised when it picked this one (see :class:`.acquisition.Selection`)."""
    uncertainty: float
    entropy: float
    disagreement: float
    cells: int
    cell_id: int | None = None
    label: str | None = None
    """Cells only: the class the classifier gives it."""


@dataclasses.dataclass
class Suggestions:
    strategy: str
    model: str
    unit: str
    """``field`` (a detector) or ``cell`` (a classifier)."""
    items: list[Suggestion]
    pool: int
    reviewed: int
    seconds: float
    skipped: list[str] = dataclasses.field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "model": self.model, "unit": self.unit, "pool": self.pool,
                "reviewed_anchors": self.reviewed, "seconds": round(self.seconds, 2), "skipped": self.skipped,
                "suggestions": [dataclasses.asdict(s) for s in self.items]}


def folder_pool(folder: str | Path, boxes: Any = None) -> Pool:
    """Every image of a folder (or the files named); ``boxes`` (an AnnotationSet) gives their cells by stem."""
    from ..cases import expand_images

    files = expand_images([folder] if isinstance(folder, (str, Path)) else list(folder))
    if len(files) > MAX_POOL:
        raise BloodcellInputError(f"holds {len(files)} images; a pool holds at most {MAX_POOL}", Path(str(folder)))
    by_stem = {Path(r.file_name).stem: r for r in boxes.images} if boxes is not None else {}
    fields = []
    for path in files:
        rec = by_stem.get(path.stem)
        fields.append(PoolField(path.name, path, boxes=None if rec is None else np.asarray(rec.boxes, float),
                                cell_ids=None if rec is None else np.arange(len(rec.boxes))))
    return Pool(fields, [], str(folder))


def _cells(table: Any) -> tuple[np.ndarray, np.ndarray]:
    from ..annotations import HUMAN_STATES

    keep = table.active_mask() & ~np.isin(table.col("review"), HUMAN_STATES)
    return np.asarray(table.col("box")[keep], dtype=np.float64).reshape(-1, 4), table.ids[keep]


def project_pool(project: Any, case: str | None = None) -> Pool:
    """The fields of a review project (or of one of its cases) not yet done; done ones are the anchors."""
    from ..cases import Case

    if case is not None:
        loaded = Case.open(project, case).tables()
        return entries_pool([(f.key, f.file_name, f.path or (image or {}).get("path"), f.digest, table)
                             for f, table, image in loaded], project, f"{project.folder} case {case}")
    return entries_pool([(key, str(image.get("file_name", key)), image.get("path"), image.get("digest"), table)
                         for key, table, image in project.load_all()], project, str(project.folder))


def entries_pool(entries: list[tuple[str, str, Any, Any, Any]], project: Any, source: str) -> Pool:
    """A pool from ``(key, file name, image path, digest, review table or None)`` per field (a case the Review
    widget holds in memory, or sidecars read from disk). A field whose image is gone is skipped, with why,
    unless the project kept a copy of its pixels."""
    from ..cases import field_state

    pool, reviewed, skipped = [], [], []
    for key, name, path, digest, table in entries:
        path = Path(path) if isinstance(path, str) and path else None
        if path is None or not path.is_file():
            try:
                kept = project.kept_image(digest) if project is not None and isinstance(digest, str) else None
            except BloodcellInputError:  # a digest that is not one (a hand-edited sidecar)
                kept = None
            if kept is None:
                skipped.append(f"{name}: its image is not at {path}" if path else f"{name}: no image path")
                continue
            path = kept
        boxes, ids = _cells(table) if table is not None else (None, None)
        item = PoolField(name, path, key, boxes, ids)
        (reviewed if field_state(table) == "done" else pool).append(item)
    return Pool(pool, reviewed, source, skipped)


def model_kind(model: str | Path) -> str:
    """``detector`` or ``classifier``: what a model name or checkpoint file is."""
    if str(model) in ("auto", "bundled", "classical"):
        return "detector"
    from ..inference.classify import FORMAT as CLASSIFIER_FORMAT
    from ..models.checkpoints import safe_torch_load

    path = Path(model)
    if not path.is_file():
        raise BloodcellInputError("no such model file (or 'auto', 'bundled', 'classical')", path)
    ckpt = safe_torch_load(path)
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    return "classifier" if fmt == CLASSIFIER_FORMAT else "detector"


def _anchors(items: list[PoolField]) -> list[PoolField]:
    if len(items) <= MAX_ANCHORS:
        return items
    pick = np.linspace(0, len(items) - 1, MAX_ANCHORS).round().astype(int)
    return [items[i] for i in pick]


def suggest_job(pool: Pool, model: str | Path, k: int = 10, strategy: str = DEFAULT_STRATEGY, score: float = 0.3,
                seed: int = 0, device: str | None = "auto") -> Generator[Progress, None, Suggestions]:
    """Score the pool with ``model`` and pick ``k`` by ``strategy``; yields progress per field scored."""
    if strategy not in STRATEGIES:
        raise BloodcellInputError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if not pool.fields:
        raise BloodcellInputError("holds no field left to review", Path(pool.source))
    t0 = time.perf_counter()
    kind = model_kind(model)
    if kind == "classifier":
        result = yield from _suggest_cells(pool, model, k, strategy, seed, device)
    else:
        result = yield from _suggest_fields(pool, model, k, strategy, score, seed, device)
    result.seconds = time.perf_counter() - t0
    result.skipped = list(pool.skipped)
    return result


def _read(path: Path) -> np.ndarray:
    from ..io.images import read_image

    return read_image(path)


def _suggest_fields(pool: Pool, model: str | Path, k: int, strategy: str, score: float, seed: int,
                    device: str | None) -> Generator[Progress, None, Suggestions]:
    from ..inference.detect import detect_array, load_predictor
    from ..progress import drain
    from .scoring import FieldScore, backbone_features, image_descriptor, score_field

    anchors = _anchors(pool.reviewed) if strategy in ("diversity", "combined") else []
    if strategy == "random":  # nothing to score: the baseline costs no model pass
        pick = select("random", k, uncertainty=np.zeros(len(pool.fields)), seed=seed)
        items = [Suggestion(r + 1, pool.fields[i].name, str(pool.fields[i].path), pool.fields[i].key, 0.0,
                            float("nan"), float("nan"), float("nan"), -1) for r, i in enumerate(pick.order)]
        return Suggestions(strategy, str(model), "field", items, len(pool.fields), 0, 0.0)
    predictor = load_predictor(model, device=device, batch_size=4)
    total = len(pool.fields) + len(anchors)
    scores: list[FieldScore] = []
    for n, field in enumerate(pool.fields):
        scores.append(score_field(predictor, _read(field.path), score=score))
        yield Progress("step", n + 1, total, message=field.name, stage="score")
    reviewed = []
    for n, field in enumerate(anchors):
        image = _read(field.path)
        with backbone_features(predictor) as feats:
            drain(detect_array(predictor, image, score=score))
        reviewed.append(np.concatenate(feats).mean(0) if feats else image_descriptor(image))
        yield Progress("step", len(pool.fields) + n + 1, total, message=field.name, stage="reviewed")
    pick = select(strategy, k, uncertainty=[s.uncertainty for s in scores],
                  embeddings=np.stack([s.embedding for s in scores]),
                  reviewed=np.stack(reviewed) if reviewed else None, seed=seed)
    items = []
    for r, (i, value) in enumerate(zip(pick.order, pick.score)):
        f, s = pool.fields[i], scores[i]
        items.append(Suggestion(r + 1, f.name, str(f.path), f.key, round(value, 5), round(s.uncertainty, 5),
                                round(s.entropy, 5), round(s.disagreement, 5), s.cells))
    return Suggestions(strategy, getattr(predictor, "label", str(model)), "field", items, len(pool.fields),
                       len(reviewed), 0.0)


def _suggest_cells(pool: Pool, model: str | Path, k: int, strategy: str, seed: int,
                   device: str | None) -> Generator[Progress, None, Suggestions]:
    from ..crops import cell_crops
    from ..inference.classify import load_classifier
    from .scoring import score_cells

    fields = [f for f in pool.fields if f.boxes is not None and len(f.boxes)]
    if not fields:
        raise BloodcellInputError("holds no unreviewed cells to type: a classifier ranks cells, so the pool needs "
                                  "boxes (a review project's cells, or --boxes for a folder)", Path(pool.source))
    pred = load_classifier(model, device=device)
    owner, ids, unc, ent, dis, labels, emb = [], [], [], [], [], [], []
    for n, field in enumerate(fields):
        crops = cell_crops(_read(field.path), field.boxes, pred.context)
        gen = score_cells(pred, crops)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                cells = stop.value
                break
        owner += [n] * len(crops)
        ids += [int(i) for i in field.cell_ids]
        unc.append(cells.uncertainty)
        ent.append(cells.entropy)
        dis.append(cells.disagreement)
        labels += [pred.classes[j] for j in cells.probabilities.argmax(1)] if len(crops) else []
        emb.append(cells.embeddings)
        yield Progress("step", n + 1, len(fields), message=field.name, stage="score")
    u, e, d = np.concatenate(unc), np.concatenate(ent), np.concatenate(dis)
    pick = select(strategy, k, uncertainty=u, embeddings=np.concatenate(emb), seed=seed)
    items = []
    for r, (i, value) in enumerate(zip(pick.order, pick.score)):
        f = fields[owner[i]]
        items.append(Suggestion(r + 1, f.name, str(f.path), f.key, round(value, 5), round(float(u[i]), 5),
                                round(float(e[i]), 5), round(float(d[i]), 5), 1, ids[i], labels[i]))
    return Suggestions(strategy, pred.model_id, "cell", items, len(u), 0, 0.0)
