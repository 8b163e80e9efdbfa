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
from ..boxes import xyxy_to_xywh
from ..errors import BloodcellInputError
from ..untrusted import class_name, finite, image_file, is_regular_file, load_json, optional_score, whole
from .records import REVIEW_STATES, AnnotationSet, ImageRecord, check_boxes


def looks_like_coco(path: str | Path) -> bool:
    """Cheap check for the reader: a .json file whose first and last 64 kB mention ``images`` and ``categories``
    (COCO writers put ``categories`` first or last; the middle can be hundreds of MB of annotations)."""
    path = Path(path)
    if path.suffix.lower() != ".json" or not is_regular_file(path):
        return False
    with open(path, "rb") as fh:
        ends = fh.read(65536)
        if path.stat().st_size > 65536:
            fh.seek(-65536, 2)
            ends += fh.read()
    return b'"images"' in ends and b'"categories"' in ends


def _locate(file_name: str, json_path: Path, image_root: Path | None) -> Path | None:
    """The image a ``file_name`` names, if it is a readable image; a name that leads to anything else (``/etc/passwd``,
    a folder, a FIFO) finds nothing."""
    try:
        name = Path(file_name)
        bases = [b for b in (image_root, json_path.parent, json_path.parent / "images", json_path.parent.parent / "images")
                 if b]
        candidates = [name] if name.is_absolute() else [b / name for b in bases] + [b / name.name for b in bases]
        return next((c for c in candidates if image_file(c) is not None), None)
    except (OSError, ValueError):  # a name too long or with a NUL byte for this file system
        return None


def _list(data: dict[str, Any], key: str, path: Path, required: bool = True) -> list[Any]:
    value = data.get(key, None if required else [])
    if not isinstance(value, list):
        raise BloodcellInputError(f"'{key}' is {type(value).__name__ if value is not None else 'null'}; "
                                  "a list is required", path)
    return value


def _categories(data: dict[str, Any], path: Path) -> tuple[list[dict[str, Any]], dict[int, int], list[str]]:
    raw = _list(data, "categories", path)
    parsed = []
    for k, c in enumerate(raw):
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise BloodcellInputError(f"category {k + 1} lacks an integer 'id' or a 'name'", path)
        parsed.append((whole(c["id"], f"category {k + 1} id", path, low=0, high=2**31), class_name(c["name"], path), c))
    parsed.sort(key=lambda t: t[0])
    ids = [p[0] for p in parsed]
    if len(set(ids)) != len(ids):
        raise BloodcellInputError(f"category ids repeat: {ids}", path)
    classes = [p[1] for p in parsed]
    if len(set(classes)) != len(classes):
        raise BloodcellInputError(f"category names repeat: {classes}", path)
    return [p[2] for p in parsed], {cid: i for i, cid in enumerate(ids)}, classes


def _annotation(ann: Any, k: int, path: Path, cat_index: dict[int, int]) -> tuple[int, dict[str, Any]]:
    """One annotation checked and reduced to plain values: image id, box, label, score, source, review, attributes."""
    where = f"annotation {k + 1}"
    if not isinstance(ann, dict):
        raise BloodcellInputError(f"{where} is {type(ann).__name__}; an object is required", path)
    if "id" in ann:
        where += f" (id {str(ann['id'])[:20]})"
    for key in ("image_id", "category_id", "bbox"):
        if key not in ann:
            raise BloodcellInputError(f"{where} lacks '{key}' (needs image_id, category_id and bbox [x, y, w, h])", path)
    image_id = whole(ann["image_id"], f"{where}: image_id", path)
    cat_id = whole(ann["category_id"], f"{where}: category_id", path)
    if cat_id not in cat_index:
        raise BloodcellInputError(
            f"{where} has category_id {cat_id}, which is not among the categories {sorted(cat_index)}", path)
    bbox = ann["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise BloodcellInputError(f"{where}: bbox is {str(bbox)[:40]}; a list [x, y, w, h] of 4 numbers is required",
                                  path)
    x, y, w, h = (finite(v, f"{where}: bbox", path) for v in bbox)
    if w < 0 or h < 0:
        raise BloodcellInputError(f"{where}: bbox width/height {w:g}x{h:g} is negative", path)
    attrs = ann.get("attributes")
    if attrs is None:
        attrs = {}
    if not isinstance(attrs, dict):
        raise BloodcellInputError(f"{where}: 'attributes' is {type(attrs).__name__}; an object is required", path)
    attrs = dict(attrs)
    for key in ("iscrowd", "segmentation"):
        if ann.get(key):
            attrs.setdefault(key, ann[key])
    source = attrs.pop("source", None)
    if source is not None and not isinstance(source, str):
        raise BloodcellInputError(f"{where}: 'source' must be text", path)
    review = attrs.pop("review", None)
    if review is not None and review not in REVIEW_STATES:
        raise BloodcellInputError(f"{where}: unknown review state {str(review)[:40]!r}; allowed: "
                                  f"{', '.join(REVIEW_STATES)}", path)
    score = optional_score(ann.get("score"), f"{where}: score", path)
    return image_id, {"box": [x, y, x + w, y + h], "label": cat_index[cat_id], "score": score, "source": source,
                      "review": review, "attributes": attrs}


def _image_entry(img: Any, k: int, path: Path) -> tuple[int, str, int, int]:
    if not isinstance(img, dict) or not all(key in img for key in ("id", "file_name", "width", "height")):
        raise BloodcellInputError(f"image entry {k + 1} lacks id/file_name/width/height", path)
    image_id = whole(img["id"], f"image entry {k + 1}: id", path)
    file_name = img["file_name"]
    if not isinstance(file_name, str) or not file_name.strip() or "\x00" in file_name or len(file_name) > 4096:
        raise BloodcellInputError(f"image entry {k + 1}: file_name {str(file_name)[:40]!r} is not a file name", path)
    width = whole(img["width"], f"image {file_name!r}: width", path, low=1, high=10**7)
    height = whole(img["height"], f"image {file_name!r}: height", path, low=1, high=10**7)
    return image_id, file_name, width, height


def read_coco(path: str | Path, image_root: str | Path | None = None) -> AnnotationSet:
    """Read a COCO JSON file; images are looked for beside it, in ``images/``, or under ``image_root``.

    Everything in the file is checked before use: numbers are finite, ids whole and unique, review states known,
    and a ``file_name`` only ever finds a readable image (never an arbitrary file)."""
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict) or "images" not in data or "categories" not in data:
        raise BloodcellInputError(
            "is not a COCO dataset: it needs top-level 'images', 'annotations' and 'categories'", path
        )
    categories, cat_index, classes = _categories(data, path)
    per_image: dict[int, list[dict[str, Any]]] = {}
    for k, ann in enumerate(_list(data, "annotations", path, required=False)):
        image_id, parsed = _annotation(ann, k, path, cat_index)
        per_image.setdefault(image_id, []).append(parsed)

    known_ids: set[int] = set()
    root = Path(image_root) if image_root else None
    warnings: list[str] = []
    records = []
    for k, img in enumerate(_list(data, "images", path)):
        image_id, file_name, width, height = _image_entry(img, k, path)
        if image_id in known_ids:
            raise BloodcellInputError(f"image id {image_id} is used twice (the second time by {file_name!r}); "
                                      "each image needs its own id", path)
        known_ids.add(image_id)
        anns = per_image.get(image_id, [])
        sources = [a["source"] for a in anns]
        reviews = [a["review"] for a in anns]
        scores = [a["score"] for a in anns]
        record = ImageRecord(
            file_name=file_name,
            width=width,
            height=height,
            boxes=np.asarray([a["box"] for a in anns], dtype=np.float64).reshape(-1, 4),
            labels=[a["label"] for a in anns],
            scores=None if all(math.isnan(s) for s in scores) else scores,
            sources=None if all(s is None for s in sources) else [s or "file" for s in sources],
            reviews=None if all(r is None for r in reviews) else [r or "accepted" for r in reviews],
            attributes=[a["attributes"] for a in anns],
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
