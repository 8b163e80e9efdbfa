"""COCO JSON: ``images``, ``annotations`` (``bbox`` as x, y, w, h pixels) and ``categories`` (ids from 1).

Per annotation we keep ``score`` (model output) and ``attributes``; the review state and who made the box travel
as ``attributes.review`` and ``attributes.source``. Categories are written with ids 1..n in class-list order and
their ``supercategory`` kept.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import ExistPolicy, atomic_write_text
from ..boxes import xywh_to_xyxy, xyxy_to_xywh
from ..errors import BloodcellInputError
from .records import AnnotationSet, ImageRecord, check_boxes


def looks_like_coco(path: str | Path) -> bool:
    """Cheap check for the reader: a .json file whose first and last 64 kB mention ``images`` and ``categories``
    (COCO writers put ``categories`` first or last; the middle can be hundreds of MB of annotations)."""
    path = Path(path)
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    with open(path, "rb") as fh:
        ends = fh.read(65536)
        if path.stat().st_size > 65536:
            fh.seek(-65536, 2)
            ends += fh.read()
    return b'"images"' in ends and b'"categories"' in ends


def _load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise BloodcellInputError("no such file", path) from None
    except json.JSONDecodeError as exc:
        raise BloodcellInputError(f"malformed JSON: {exc}", path) from exc
    except UnicodeDecodeError as exc:
        raise BloodcellInputError(f"not a UTF-8 text file: {exc}", path) from exc


def _locate(file_name: str, json_path: Path, image_root: Path | None) -> Path | None:
    name = Path(file_name)
    bases = [b for b in (image_root, json_path.parent, json_path.parent / "images", json_path.parent.parent / "images") if b]
    candidates = [name] if name.is_absolute() else [b / name for b in bases] + [b / name.name for b in bases]
    return next((c for c in candidates if c.is_file()), None)


def read_coco(path: str | Path, image_root: str | Path | None = None) -> AnnotationSet:
    """Read a COCO JSON file; images are looked for beside it, in ``images/``, or under ``image_root``."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict) or "images" not in data or "categories" not in data:
        raise BloodcellInputError(
            "is not a COCO dataset: it needs top-level 'images', 'annotations' and 'categories'", path
        )
    try:
        categories = sorted(data["categories"], key=lambda c: int(c["id"]))
        cat_index = {int(c["id"]): i for i, c in enumerate(categories)}
        classes = [str(c["name"]) for c in categories]
    except (KeyError, TypeError, ValueError) as exc:
        raise BloodcellInputError(f"a category lacks an integer 'id' or a 'name' ({exc!r})", path) from None
    if len(set(classes)) != len(classes):
        raise BloodcellInputError(f"category names repeat: {classes}", path)

    per_image: dict[int, list[dict[str, Any]]] = {}
    for k, ann in enumerate(data.get("annotations", [])):
        try:
            image_id, cat_id, bbox = int(ann["image_id"]), int(ann["category_id"]), ann["bbox"]
            if len(bbox) != 4:
                raise ValueError("bbox needs 4 numbers")
            [float(v) for v in bbox]
        except (KeyError, TypeError, ValueError) as exc:
            raise BloodcellInputError(
                f"annotation {k + 1} (id {ann.get('id', '?') if isinstance(ann, dict) else '?'}) is malformed: "
                f"needs image_id, category_id and bbox [x, y, w, h] ({exc})",
                path,
            ) from None
        if cat_id not in cat_index:
            raise BloodcellInputError(
                f"annotation {k + 1} (id {ann.get('id', '?')}) has category_id {cat_id}, which is not among the "
                f"categories {sorted(cat_index)}",
                path,
            )
        per_image.setdefault(image_id, []).append(ann)

    known_ids = set()
    root = Path(image_root) if image_root else None
    warnings: list[str] = []
    records = []
    for img in data["images"]:
        try:
            image_id, file_name = int(img["id"]), str(img["file_name"])
            width, height = int(img["width"]), int(img["height"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BloodcellInputError(f"an image entry lacks id/file_name/width/height ({exc!r})", path) from None
        known_ids.add(image_id)
        anns = per_image.get(image_id, [])
        attrs = [dict(a.get("attributes") or {}) for a in anns]
        for a, ann in zip(attrs, anns):
            for key in ("iscrowd", "segmentation"):
                if ann.get(key):
                    a.setdefault(key, ann[key])
        sources = [a.pop("source", None) for a in attrs]
        reviews = [a.pop("review", None) for a in attrs]
        scores = [float(a["score"]) if a.get("score") is not None else math.nan for a in anns]
        record = ImageRecord(
            file_name=file_name,
            width=width,
            height=height,
            boxes=xywh_to_xyxy([a["bbox"] for a in anns]) if anns else np.zeros((0, 4)),
            labels=[cat_index[int(a["category_id"])] for a in anns],
            scores=None if all(math.isnan(s) for s in scores) else scores,
            sources=None if all(s is None for s in sources) else [s or "file" for s in sources],
            reviews=None if all(r is None for r in reviews) else [r or "accepted" for r in reviews],
            attributes=attrs,
            path=_locate(file_name, path, root),
            extra={k: v for k, v in img.items() if k not in ("id", "file_name", "width", "height")},
        )
        records.append(check_boxes(record, path, warnings))
    orphans = sorted(set(per_image) - known_ids)
    if orphans:
        raise BloodcellInputError(f"annotations refer to image_id {orphans[:5]} which is not in 'images'", path)
    extra = {
        "info": data.get("info"),
        "licenses": data.get("licenses"),
        "supercategories": [c.get("supercategory") for c in categories],
    }
    return AnnotationSet(classes=classes, images=records, format="coco", root=path.parent, warnings=warnings, extra=extra)


def coco_dict(aset: AnnotationSet, file_names: list[str] | None = None) -> dict[str, Any]:
    """The COCO structure for an annotation set; ``file_names`` overrides each image's ``file_name``."""
    supers = aset.extra.get("supercategories") or []
    categories = [
        {"id": i + 1, "name": name, "supercategory": (supers[i] if i < len(supers) and supers[i] else "cell")}
        for i, name in enumerate(aset.classes)
    ]
    images, annotations = [], []
    ann_id = 1
    for img_id, rec in enumerate(aset.images, start=1):
        entry = {"id": img_id, "file_name": file_names[img_id - 1] if file_names else rec.file_name,
                 "width": int(rec.width), "height": int(rec.height)}
        entry.update({k: v for k, v in rec.extra.items() if k not in entry and not k.startswith("_") and _json_safe(v)})
        images.append(entry)
        xywh = xyxy_to_xywh(rec.boxes)
        scores, attrs = rec.score_list(), rec.attribute_list()
        for i in range(len(rec)):
            a = attrs[i]
            ann: dict[str, Any] = {
                "id": ann_id,
                "image_id": img_id,
                "category_id": int(rec.labels[i]) + 1,
                "bbox": [round(float(v), 4) for v in xywh[i]],
                "area": round(float(xywh[i, 2] * xywh[i, 3]), 4),
                "iscrowd": int(a.pop("iscrowd", 0) or 0),
            }
            segmentation = a.pop("segmentation", None)
            if segmentation:
                ann["segmentation"] = segmentation
            if not math.isnan(scores[i]):
                ann["score"] = float(scores[i])
            if rec.sources is not None:
                a["source"] = rec.sources[i]
            if rec.reviews is not None:
                a["review"] = rec.reviews[i]
            if a:
                ann["attributes"] = a
            annotations.append(ann)
            ann_id += 1
    out: dict[str, Any] = {}
    if aset.extra.get("info"):
        out["info"] = aset.extra["info"]
    if aset.extra.get("licenses"):
        out["licenses"] = aset.extra["licenses"]
    out.update({"images": images, "annotations": annotations, "categories": categories})
    return out


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def write_coco(
    aset: AnnotationSet, path: str | Path, file_names: list[str] | None = None, exist: ExistPolicy = "refuse"
) -> Path:
    return atomic_write_text(path, json.dumps(coco_dict(aset, file_names), indent=1) + "\n", exist=exist)
