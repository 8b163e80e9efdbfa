"""Point annotations: one click per cell, the way pathologists often label (Chula-RBC-12 marks every red cell so).

Three layouts are read and written:

* ``x y type`` text, one file per image (Chula-RBC-12: ``Label/<id>.txt`` beside ``Dataset/<id>.jpg``); types are
  integers, named by a ``classes.txt`` beside the labels when there is one, else by the Chula-RBC-12 list when
  every type is one of its 13, else ``type N``;
* CSV with ``x,y,class`` columns (and ``image`` when the file covers several images);
* COCO with ``keypoints`` (``[x, y, v]``; one keypoint per annotation, ``v = 0`` skipped).

Points keep the box contract's spirit: float pixel coordinates + int64 labels into ``classes``. Every file is
untrusted: sizes are bounded, coordinates must be finite and inside the image (a pixel of tolerance), class
names are checked, and a bad file is one :class:`BloodcellInputError` naming it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import ExistPolicy, atomic_write_text
from ..errors import BloodcellInputError
from ..untrusted import class_name, finite, image_file, is_regular_file, load_json, read_text, whole
from .images import image_size

CHULA_TYPES = ("normal", "macrocyte", "microcyte", "spherocyte", "target cell", "stomatocyte", "ovalocyte",
               "teardrop", "burr cell", "schistocyte", "uncategorised", "hypochromia", "elliptocyte")
"""The Chula-RBC-12 morphology types, in the order of their numbers."""
MAX_POINTS_PER_IMAGE = 100_000
MAX_TYPE = 10_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
EDGE_TOLERANCE = 1.0


@dataclasses.dataclass
class PointRecord:
    """The points of one image."""

    file_name: str
    width: int
    height: int
    points: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 2)))
    """(N, 2) float64 x, y in pixels."""
    labels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    path: Path | None = None

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float64).reshape(-1, 2)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(len(self.points))

    def __len__(self) -> int:
        return len(self.points)

    @property
    def stem(self) -> str:
        return Path(self.file_name).stem


@dataclasses.dataclass
class PointSet:
    classes: list[str]
    images: list[PointRecord]
    format: str = "points"
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def n_points(self) -> int:
        return sum(len(r) for r in self.images)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(np.concatenate([r.labels for r in self.images] or [np.zeros(0, np.int64)]),
                             minlength=len(self.classes))
        return {c: int(counts[k]) for k, c in enumerate(self.classes)}

    def by_stem(self) -> dict[str, PointRecord]:
        return {r.stem: r for r in self.images}


# ----------------------------------------------------------------------------------------------------- sniffing


def points_format(path: str | Path) -> str | None:
    """``xyt`` (x y type text, a file or a folder of them), ``csv`` or ``coco`` when ``path`` holds points."""
    path = Path(path)
    try:
        if path.is_dir():
            labels = path / "Label" if (path / "Label").is_dir() else path
            return "xyt" if any(labels.glob("*.txt")) else None
        suffix = path.suffix.lower()
        if suffix == ".txt":
            return "xyt"
        if suffix == ".csv" and is_regular_file(path):
            with open(path, encoding="utf-8", errors="replace") as fh:
                header = [h.strip().lower() for h in fh.readline(65536).split(",")]
            return "csv" if {"x", "y", "class"} <= set(header) else None
        if suffix == ".json" and is_regular_file(path):
            with open(path, encoding="utf-8", errors="replace") as fh:
                head = fh.read(1 << 20)
            return "coco" if '"keypoints"' in head else None
    except OSError:
        return None
    return None


def read_points(path: str | Path, images: str | Path | None = None, classes: list[str] | None = None) -> PointSet:
    """Read points of any supported layout; ``images`` is the folder holding the pictures when it is not the
    usual place (``Dataset/`` beside ``Label/``, or the file's own folder)."""
    path = Path(path)
    if not path.exists():
        raise BloodcellInputError("no such file or folder", path)
    fmt = points_format(path)
    if fmt == "xyt":
        return read_xyt(path, images, classes)
    if fmt == "csv":
        return read_point_csv(path, images, classes)
    if fmt == "coco":
        return read_coco_points(path, images)
    raise BloodcellInputError("is not a point annotation file; allowed: 'x y type' .txt files (or a folder of them, "
                              "e.g. Label/), a CSV with x,y,class columns, or COCO JSON with keypoints", path)


# ------------------------------------------------------------------------------------------------- x y type text


def _image_for(stem: str, folders: list[Path]) -> Path | None:
    for folder in folders:
        for suffix in IMAGE_SUFFIXES:
            for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
                found = image_file(candidate)
                if found is not None:
                    return found
    return None


def _size(found: Path | None, points: np.ndarray, where: Path) -> tuple[int, int]:
    if found is not None:
        return image_size(found)
    if not len(points):
        raise BloodcellInputError("its image was not found, so the image size is unknown", where)
    return int(np.ceil(points[:, 0].max())) + 1, int(np.ceil(points[:, 1].max())) + 1


def _check_inside(points: np.ndarray, width: int, height: int, where: Path, warnings: list[str]) -> np.ndarray:
    """Points up to a pixel past the edge are clipped (rounding); further out is an error naming the point."""
    if not len(points):
        return points
    out = (points[:, 0] < -EDGE_TOLERANCE) | (points[:, 0] > width + EDGE_TOLERANCE) | \
          (points[:, 1] < -EDGE_TOLERANCE) | (points[:, 1] > height + EDGE_TOLERANCE)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise BloodcellInputError(f"point {i + 1} at ({points[i, 0]:g}, {points[i, 1]:g}) lies outside the "
                                  f"{width}x{height} image", where)
    clipped = np.clip(points, 0, [width - 1e-6, height - 1e-6])
    if (clipped != points).any():
        warnings.append(f"{where.name}: {int((clipped != points).any(axis=1).sum())} point(s) on the edge clipped")
    return clipped


def _type_names(types: set[int], folder: Path, classes: list[str] | None) -> dict[int, str]:
    if classes is not None:
        names = list(classes)
    elif is_regular_file(folder / "classes.txt"):
        names = [class_name(line, folder / "classes.txt")
                 for line in read_text(folder / "classes.txt", 1 << 20).splitlines() if line.strip()]
    elif types <= set(range(len(CHULA_TYPES))):
        names = list(CHULA_TYPES)
    else:
        return {t: f"type {t}" for t in sorted(types)}
    missing = sorted(t for t in types if t >= len(names))
    if missing:
        raise BloodcellInputError(f"type {missing[0]} has no name (the class list has {len(names)})", folder)
    return dict(enumerate(names))


def _parse_xyt(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = []
    for n, line in enumerate(read_text(path, 16 << 20).splitlines(), 1):
        parts = line.replace(",", " ").split()
        if not parts:
            continue
        if len(parts) != 3:
            raise BloodcellInputError(f"line {n} has {len(parts)} fields; 'x y type' needs 3", path)
        rows.append((finite(parts[0], f"x on line {n}", path), finite(parts[1], f"y on line {n}", path),
                     whole(parts[2], f"type on line {n}", path, 0, MAX_TYPE)))
        if len(rows) > MAX_POINTS_PER_IMAGE:
            raise BloodcellInputError(f"holds more than {MAX_POINTS_PER_IMAGE} points", path)
    xy = np.asarray([r[:2] for r in rows], dtype=np.float64).reshape(-1, 2)
    return xy, np.asarray([r[2] for r in rows], dtype=np.int64)


def read_xyt(path: str | Path, images: str | Path | None = None, classes: list[str] | None = None) -> PointSet:
    path = Path(path)
    label_dir = (path / "Label" if (path / "Label").is_dir() else path) if path.is_dir() else path.parent
    files = sorted(label_dir.glob("*.txt")) if path.is_dir() else [path]
    files = [f for f in files if f.name != "classes.txt"]
    root = label_dir.parent
    folders = [Path(images)] if images else [root / "Dataset", root / "images", label_dir, root]
    parsed = [(f, *_parse_xyt(f)) for f in files]
    types = {int(t) for _, _, labels in parsed for t in labels}
    names = _type_names(types, label_dir, classes)
    order = sorted(names)  # the whole named vocabulary, so class indices never depend on which types occur
    class_list = [names[t] for t in order]
    index = {t: k for k, t in enumerate(order)}
    warnings: list[str] = []
    records = []
    for f, xy, labels in parsed:
        found = _image_for(f.stem, folders)
        width, height = _size(found, xy, f)
        xy = _check_inside(xy, width, height, f, warnings)
        records.append(PointRecord(found.name if found else f"{f.stem}.jpg", width, height, xy,
                                   np.asarray([index[int(t)] for t in labels], dtype=np.int64), found))
    return PointSet(class_list, records, "xyt", warnings)


# ------------------------------------------------------------------------------------------------------- CSV


def read_point_csv(path: str | Path, images: str | Path | None = None, classes: list[str] | None = None) -> PointSet:
    path = Path(path)
    try:
        rows = list(csv.DictReader(io.StringIO(read_text(path), newline="")))
    except csv.Error as exc:
        raise BloodcellInputError(f"malformed CSV: {exc}", path) from None
    rows = [{(k or "").strip().lower(): v for k, v in r.items()} for r in rows]
    if rows and not {"x", "y", "class"} <= set(rows[0]):
        raise BloodcellInputError("needs x, y and class columns", path)
    class_list = list(classes or [])
    per_image: dict[str, list[tuple[float, float, int]]] = {}
    for n, r in enumerate(rows, 2):
        name = class_name(r.get("class"), path)
        if name not in class_list:
            if classes is not None:
                raise BloodcellInputError(f"line {n}: class {name!r} is not one of {classes}", path)
            class_list.append(name)
        image = str(r.get("image") or path.stem)
        per_image.setdefault(image, []).append((finite(r.get("x"), f"x on line {n}", path),
                                                finite(r.get("y"), f"y on line {n}", path), class_list.index(name)))
    folders = [Path(images)] if images else [path.parent, path.parent / "images"]
    warnings: list[str] = []
    records = []
    for image, pts in per_image.items():
        if len(pts) > MAX_POINTS_PER_IMAGE:
            raise BloodcellInputError(f"image {image!r} has more than {MAX_POINTS_PER_IMAGE} points", path)
        xy = np.asarray([p[:2] for p in pts], dtype=np.float64)
        found = _image_for(Path(image).stem, folders)
        width, height = _size(found, xy, path)
        xy = _check_inside(xy, width, height, path, warnings)
        records.append(PointRecord(found.name if found else Path(image).name, width, height, xy,
                                   np.asarray([p[2] for p in pts], dtype=np.int64), found))
    return PointSet(class_list, records, "csv", warnings)


# ------------------------------------------------------------------------------------------------------ COCO


def read_coco_points(path: str | Path, images: str | Path | None = None) -> PointSet:
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list) or not isinstance(data.get("categories"), list):
        raise BloodcellInputError("is not COCO (needs images, annotations and categories lists)", path)
    cats = {}
    for c in data["categories"]:
        if not isinstance(c, dict):
            raise BloodcellInputError("a category is not an object", path)
        cats[whole(c.get("id"), "a category id", path)] = class_name(c.get("name"), path)
    class_list = list(dict.fromkeys(cats.values()))
    folders = [Path(images)] if images else [path.parent, path.parent / "images"]
    records: dict[int, PointRecord] = {}
    pts: dict[int, list[tuple[float, float, int]]] = {}
    for im in data["images"]:
        if not isinstance(im, dict):
            raise BloodcellInputError("an image entry is not an object", path)
        iid = whole(im.get("id"), "an image id", path)
        name = str(im.get("file_name") or "")[:500]
        found = _image_for(Path(name).stem, folders)
        records[iid] = PointRecord(Path(name).name, whole(im.get("width"), "image width", path, 1, 1_000_000),
                                   whole(im.get("height"), "image height", path, 1, 1_000_000), path=found)
        pts[iid] = []
    for k, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or not isinstance(a.get("keypoints"), list):
            continue  # boxes without keypoints belong to the box reader
        iid = whole(a.get("image_id"), f"annotation {k}'s image_id", path)
        if iid not in records:
            raise BloodcellInputError(f"annotation {k} names image {iid}, which is not listed", path)
        cat = whole(a.get("category_id"), f"annotation {k}'s category_id", path)
        if cat not in cats:
            raise BloodcellInputError(f"annotation {k} names category {cat}, which is not listed", path)
        kp = a["keypoints"]
        if len(kp) % 3 or len(kp) > 3 * 1000:
            raise BloodcellInputError(f"annotation {k}'s keypoints are not [x, y, v] triples", path)
        for j in range(0, len(kp), 3):
            if whole(kp[j + 2], f"annotation {k}'s visibility", path, 0, 2) > 0:
                pts[iid].append((finite(kp[j], f"annotation {k}'s x", path), finite(kp[j + 1], f"annotation {k}'s y",
                                                                                    path), class_list.index(cats[cat])))
        if len(pts[iid]) > MAX_POINTS_PER_IMAGE:
            raise BloodcellInputError(f"image {iid} has more than {MAX_POINTS_PER_IMAGE} points", path)
    warnings: list[str] = []
    for iid, rec in records.items():
        xy = np.asarray([p[:2] for p in pts[iid]], dtype=np.float64).reshape(-1, 2)
        rec.points = _check_inside(xy, rec.width, rec.height, path, warnings)
        rec.labels = np.asarray([p[2] for p in pts[iid]], dtype=np.int64)
    return PointSet(class_list, list(records.values()), "coco", warnings)


# ----------------------------------------------------------------------------------------------------- writing


def point_csv_text(pset: PointSet) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "x", "y", "class"])
    for rec in pset.images:
        for (x, y), label in zip(rec.points, rec.labels, strict=True):
            writer.writerow([rec.file_name, f"{x:.2f}", f"{y:.2f}", pset.classes[int(label)]])
    return buffer.getvalue()


def coco_points(pset: PointSet) -> dict[str, Any]:
    images, annotations = [], []
    for iid, rec in enumerate(pset.images, 1):
        images.append({"id": iid, "file_name": rec.file_name, "width": rec.width, "height": rec.height})
        for (x, y), label in zip(rec.points, rec.labels, strict=True):
            annotations.append({"id": len(annotations) + 1, "image_id": iid, "category_id": int(label) + 1,
                                "keypoints": [round(float(x), 2), round(float(y), 2), 2], "num_keypoints": 1})
    cats = [{"id": k + 1, "name": c, "supercategory": "cell", "keypoints": ["centre"]}
            for k, c in enumerate(pset.classes)]
    return {"images": images, "annotations": annotations, "categories": cats}


def xyt_text(rec: PointRecord) -> str:
    return "".join(f"{x:.2f} {y:.2f} {int(t)}\n" for (x, y), t in zip(rec.points, rec.labels, strict=True))


def write_points(pset: PointSet, out: str | Path, fmt: str | None = None, exist: ExistPolicy = "refuse") -> list[Path]:
    """Write ``pset`` as ``csv`` (one file), ``coco`` (one .json) or ``xyt`` (a folder: ``classes.txt`` and one
    ``<stem>.txt`` per image); the format follows the suffix when not given."""
    from ..untrusted import inside, output_name

    out = Path(out)
    fmt = fmt or {".csv": "csv", ".json": "coco"}.get(out.suffix.lower(), "xyt")
    if fmt == "csv":
        return [atomic_write_text(out, point_csv_text(pset), exist=exist)]
    if fmt == "coco":
        return [atomic_write_text(out, json.dumps(coco_points(pset), indent=1), exist=exist)]
    if fmt != "xyt":
        raise BloodcellInputError(f"unknown point format {fmt!r}; allowed: csv, coco, xyt")
    written = [atomic_write_text(inside(out, "classes.txt"), "".join(f"{c}\n" for c in pset.classes), exist=exist)]
    for rec in pset.images:
        name = output_name(f"{rec.stem}.txt")
        written.append(atomic_write_text(inside(out, name), xyt_text(rec), exist=exist))
    return written
