"""Ranking a pool: score every field (or cell) with the model in a generator job, pick k by a strategy.

Each field is read and scored on its own: an image that is gone, changed or unreadable is skipped with one line
saying why, and the others are still ranked. Diversity needs only the embedding (one pass); random no pass at all.
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
from .pool import MAX_ANCHORS, Pool, PoolField, resolve

FIELD_ERRORS = (BloodcellInputError, OSError, RuntimeError, MemoryError)
"""What scoring one field may raise (bad file, a model that runs out of memory on it): that field is skipped and
named, the others are still ranked."""


def _why(exc: BaseException) -> str:
    if isinstance(exc, BloodcellInputError):
        return str(exc)
    return f"could not be scored ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"


MAX_CELLS = 200_000
"""Most cells one ranking scores (an even sample of the pool's fields beyond it is refused, not truncated)."""


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
    if seed < 0:
        raise BloodcellInputError(f"the seed must be 0 or more; got {seed}")
    if not pool.fields:
        raise BloodcellInputError("holds no field left to review", Path(pool.source))
    t0 = time.perf_counter()
    skipped = list(pool.skipped)
    if model_kind(model) == "classifier":
        result = yield from _suggest_cells(pool, model, k, strategy, seed, device, skipped)
    else:
        result = yield from _suggest_fields(pool, model, k, strategy, score, seed, device, skipped)
    result.seconds = time.perf_counter() - t0
    result.skipped = skipped
    return result


def _image(field: PoolField, pool: Pool) -> tuple[str, np.ndarray]:
    """Where the field's image is, and its pixels as RGB uint8 (greyscale, 16-bit and RGBA as the detector sees
    them)."""
    from ..io.images import read_image
    from ..io.rgb import as_rgb

    path = resolve(field, pool.project)
    return str(path), as_rgb(read_image(path))


def field_embedding(predictor: Any, image: np.ndarray, score: float) -> np.ndarray:
    """One detection pass, for its backbone features only (the descriptor without a backbone)."""
    from ..inference.detect import detect_array
    from ..progress import drain
    from .scoring import backbone_features, image_descriptor

    with backbone_features(predictor) as feats:
        drain(detect_array(predictor, image, score=score))
    return np.concatenate(feats).mean(0) if feats else image_descriptor(image)


def _suggest_fields(pool: Pool, model: str | Path, k: int, strategy: str, score: float, seed: int,
                    device: str | None, skipped: list[str]) -> Generator[Progress, None, Suggestions]:
    from ..inference.detect import load_predictor
    from .scoring import FieldScore, score_field

    nan = float("nan")
    if strategy == "random":  # nothing to score: the baseline costs no model pass, only finding the images
        items: list[Suggestion] = []
        for i in select("random", len(pool.fields), uncertainty=np.zeros(len(pool.fields)), seed=seed).order:
            if len(items) == k:
                break
            field = pool.fields[i]
            try:
                path = str(resolve(field, pool.project))
            except FIELD_ERRORS as exc:
                skipped.append(f"{field.name}: {_why(exc)}")
                continue
            items.append(Suggestion(len(items) + 1, field.name, path, field.key, 0.0, nan, nan, nan, -1))
        if not items:
            raise BloodcellInputError(f"no field of the pool could be found ({'; '.join(skipped[:3])})",
                                      Path(pool.source))
        return Suggestions(strategy, "none (random)", "field", items, len(pool.fields), 0, 0.0)
    anchors = _anchors(pool.reviewed) if strategy in ("diversity", "combined") else []
    predictor = load_predictor(model, device=device, batch_size=4)
    total = len(pool.fields) + len(anchors)
    kept: list[tuple[PoolField, str, FieldScore]] = []
    for n, field in enumerate(pool.fields):
        try:
            path, image = _image(field, pool)
            if strategy == "diversity":  # one pass: the embedding is all it needs
                s = FieldScore(nan, nan, nan, -1, field_embedding(predictor, image, score))
            else:
                s = score_field(predictor, image, score=score)
            if not np.isfinite(s.embedding).all():
                raise BloodcellInputError("the model's features for it are not finite numbers")
            kept.append((field, path, s))
        except FIELD_ERRORS as exc:
            skipped.append(f"{field.name}: {_why(exc)}")
        yield Progress("step", n + 1, total, message=field.name, stage="score")
    reviewed = []
    width = kept[0][2].embedding.shape if kept else None
    for n, field in enumerate(anchors):
        try:
            e = field_embedding(predictor, _image(field, pool)[1], score)
            if not np.isfinite(e).all() or e.shape != width:
                raise BloodcellInputError("its features are not finite, or not like the pool's")
            reviewed.append(e)
        except FIELD_ERRORS as exc:
            skipped.append(f"{field.name} (reviewed): {_why(exc)}")
        yield Progress("step", len(pool.fields) + n + 1, total, message=field.name, stage="reviewed")
    if not kept:
        raise BloodcellInputError(f"no field of the pool could be scored ({'; '.join(skipped[:3])})",
                                  Path(pool.source))
    pick = select(strategy, k, uncertainty=None if strategy == "diversity" else [s.uncertainty for _, _, s in kept],
                  embeddings=np.stack([s.embedding for _, _, s in kept]),
                  reviewed=np.stack(reviewed) if reviewed else None, seed=seed)
    items = []
    for r, (i, value) in enumerate(zip(pick.order, pick.score)):
        f, path, s = kept[i]
        items.append(Suggestion(r + 1, f.name, path, f.key, round(value, 5), round(s.uncertainty, 5),
                                round(s.entropy, 5), round(s.disagreement, 5), s.cells))
    return Suggestions(strategy, getattr(predictor, "label", str(model)), "field", items, len(pool.fields),
                       len(reviewed), 0.0)


def typed_cells(field: PoolField, pred: Any) -> np.ndarray:
    """Indices of the field's cells the classifier types: its target class (a detector's WBC) and cells already
    given one of its types; every cell when the classes do not overlap (as ``bloodcell classify`` does)."""
    from ..inference.classify import default_target

    names = field.labels or []
    target = default_target(pred, sorted(set(names)))
    wanted = set(pred.classes) | ({target} if target else set())
    chosen = np.array([n in wanted for n in names], dtype=bool)
    return np.flatnonzero(chosen) if chosen.any() else np.arange(len(names) or len(field.boxes))


def _suggest_cells(pool: Pool, model: str | Path, k: int, strategy: str, seed: int, device: str | None,
                   skipped: list[str]) -> Generator[Progress, None, Suggestions]:
    from ..crops import cell_crops
    from ..inference.classify import load_classifier
    from ..progress import drain
    from .scoring import score_cells

    fields = [f for f in pool.fields if f.boxes is not None and len(f.boxes)]
    if not fields:
        raise BloodcellInputError("holds no unreviewed cells to type: a classifier ranks cells, so the pool needs "
                                  "boxes (a review project's cells, or --boxes for a folder)", Path(pool.source))
    pred = load_classifier(model, device=device)
    chosen = [typed_cells(f, pred) for f in fields]
    if sum(len(c) for c in chosen) > MAX_CELLS:
        raise BloodcellInputError(f"holds {sum(len(c) for c in chosen)} cells to type; one ranking takes at most "
                                  f"{MAX_CELLS} (rank a case or a part of the archive)", Path(pool.source))
    rows: list[tuple[PoolField, str, int, str]] = []
    unc, ent, dis, emb = [], [], [], []
    for n, (field, idx) in enumerate(zip(fields, chosen)):
        try:
            if strategy == "random":  # no pass: the cells' current classes are shown
                from ..io.images import image_size

                path, cells = str(resolve(field, pool.project)), None
                if field.size is not None and field.size != tuple(image_size(Path(path))):
                    raise BloodcellInputError(f"its boxes are for a {field.size[0]}x{field.size[1]} image")
                labels = [field.labels[i] if field.labels else "" for i in idx]
            else:
                path, image = _image(field, pool)
                if field.size is not None and field.size != (image.shape[1], image.shape[0]):
                    raise BloodcellInputError(f"its boxes are for a {field.size[0]}x{field.size[1]} image; it is "
                                              f"{image.shape[1]}x{image.shape[0]}")
                cells = drain(score_cells(pred, cell_crops(image, field.boxes[idx], pred.context)))
                labels = [pred.classes[j] for j in cells.probabilities.argmax(1)]
        except FIELD_ERRORS as exc:
            skipped.append(f"{field.name}: {_why(exc)}")
            yield Progress("step", n + 1, len(fields), message=field.name, stage="score")
            continue
        rows += [(field, path, int(field.cell_ids[i]), label) for i, label in zip(idx, labels)]
        if cells is not None:
            unc.append(cells.uncertainty)
            ent.append(cells.entropy)
            dis.append(cells.disagreement)
            emb.append(cells.embeddings)
        yield Progress("step", n + 1, len(fields), message=field.name, stage="score")
    if not rows:
        raise BloodcellInputError(f"no cell of the pool could be scored ({'; '.join(skipped[:3])})",
                                  Path(pool.source))
    nan = np.full(len(rows), np.nan)
    u, e, d = (np.concatenate(x) if x else nan for x in (unc, ent, dis))
    pick = select(strategy, k, uncertainty=u if unc else np.zeros(len(rows)),
                  embeddings=np.concatenate(emb) if emb else None, seed=seed)
    items = []
    for r, (i, value) in enumerate(zip(pick.order, pick.score)):
        f, path, cell_id, label = rows[i]
        items.append(Suggestion(r + 1, f.name, path, f.key, round(value, 5), round(float(u[i]), 5),
                                round(float(e[i]), 5), round(float(d[i]), 5), 1, cell_id, label))
    return Suggestions(strategy, pred.model_id, "cell", items, len(rows), 0, 0.0)
