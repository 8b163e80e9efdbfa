"""YOLO: ``images/NAME.jpg`` beside ``labels/NAME.txt``, one ``class cx cy w h [score]`` line per box.

Coordinates are normalised by the image size, so reading needs each image's size (taken from its header). Class
names come from ``classes.txt`` (one per line) or ``data.yaml`` (``names`` as a list or an id -> name mapping).
Sub-folders (``images/train/...``) are mirrored under ``labels/``. Attributes, sources and review states cannot be
stored in YOLO files; scores can, as a sixth column (the format YOLO tools write predictions in).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..atomic import ExistPolicy, atomic_write_text
from ..boxes import xyxy_to_yolo, yolo_to_xyxy
from ..errors import BloodcellInputError
from ..untrusted import class_name, finite, is_regular_file, load_yaml, optional_score, read_text, whole
from .images import IMAGE_SUFFIXES, find_image, image_size
from .records import AnnotationSet, ImageRecord, check_boxes

YAML_NAMES = ("data.yaml", "dataset.yaml", "data.yml")


def yolo_root(path: str | Path) -> Path | None:
    """The dataset folder for a YOLO folder, its ``data.yaml``, or a label file in it; None if not YOLO."""
    path = Path(path)
    if path.is_dir():
        if (path / "labels").is_dir() and (path / "images").is_dir():
            return path
        return None
    if path.name in YAML_NAMES or path.name == "classes.txt":
        for root in (path.parent, path.parent.parent):  # classes.txt may sit in labels/
            if (root / "labels").is_dir() and (root / "images").is_dir():
                return root
        return None
    if path.suffix.lower() == ".txt":
        for parent in path.parents:
            if parent.name == "labels":
                root = parent.parent
                return root if (root / "images").is_dir() else None
    return None


def read_yolo_classes(root: Path) -> tuple[list[str], dict[int, int]]:
    """Class names from classes.txt (dataset or labels folder) or data.yaml, and the map from the class ids the
    label files use to positions in that list (``names: {0: RBC, 2: WBC}`` keeps WBC as id 2)."""
    for candidate in (root / "classes.txt", root / "labels" / "classes.txt"):
        if is_regular_file(candidate):
            names = [class_name(ln, candidate) for ln in read_text(candidate, 1024 * 1024).splitlines() if ln.strip()]
            if names:
                _unique(names, candidate)
                return names, {i: i for i in range(len(names))}
    for name in YAML_NAMES:
        candidate = root / name
        if is_regular_file(candidate):
            data = load_yaml(candidate)
            names = data.get("names") if isinstance(data, dict) else None
            if isinstance(names, dict) and names:
                ids = [whole(k, "a 'names' key", candidate, low=0, high=100_000) for k in names]
                if len(set(ids)) != len(ids):
                    raise BloodcellInputError(f"'names' repeats a class id: {sorted(ids)}", candidate)
                order = sorted(zip(ids, names.values()), key=lambda t: t[0])
                classes = [class_name(v, candidate) for _, v in order]
                _unique(classes, candidate)
                return classes, {cid: i for i, (cid, _) in enumerate(order)}
            if isinstance(names, list) and names:
                classes = [class_name(n, candidate) for n in names]
                _unique(classes, candidate)
                return classes, {i: i for i in range(len(classes))}
            raise BloodcellInputError("has no 'names' list of classes", candidate)
    raise BloodcellInputError("no class list: add classes.txt (one name per line) or data.yaml with 'names'", root)


def _unique(names: list[str], path: Path) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise BloodcellInputError(f"class names repeat: {repeated}; each class needs its own name", path)


def parse_label_file(path: Path, ids: int | dict[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised cx, cy, w, h boxes, class positions and scores (NaN when absent) from one label file; ``ids``
    maps the file's class ids to class positions (an int n means ids 0..n-1 as they are)."""
    id_map = {i: i for i in range(ids)} if isinstance(ids, int) else ids
    boxes, labels, scores = [], [], []
    lines = read_text(path, 64 * 1024 * 1024).splitlines()
    for line_no, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        where = f"line {line_no}"
        if len(parts) > 4097:
            raise BloodcellInputError(f"{where}: {len(parts)} values; not 'class cx cy w h [score]'", path)
        cls = whole(parts[0], f"{where}: class id", path)
        if cls not in id_map:
            known = sorted(id_map)
            allowed = f"allowed 0..{len(known) - 1}" if known == list(range(len(known))) else f"known: {known[:20]}"
            raise BloodcellInputError(f"{where}: class id {cls} is unknown ({allowed})", path)
        values = [finite(p, f"{where}: value {k + 2}", path, bound=1e6) for k, p in enumerate(parts[1:])]
        if len(values) in (4, 5):
            if values[2] < 0 or values[3] < 0:
                raise BloodcellInputError(f"{where}: width/height {values[2]:g}, {values[3]:g} is negative", path)
            boxes.append(values[:4])
            scores.append(optional_score(values[4], f"{where}: score", path) if len(values) == 5 else math.nan)
        elif len(values) >= 6 and len(values) % 2 == 0:  # segmentation polygon: box around it
            xs, ys = values[0::2], values[1::2]
            boxes.append([(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)])
            scores.append(math.nan)
        else:
            raise BloodcellInputError(
                f"{where}: expected 5 or 6 numbers ('class cx cy w h [score]'), got {len(parts)}", path
            )
        labels.append(id_map[cls])
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(labels, dtype=np.int64), np.asarray(scores)


def read_yolo(path: str | Path) -> AnnotationSet:
    """Read a YOLO dataset folder, its data.yaml, or a single label file (with its image)."""
    path = Path(path)
    root = yolo_root(path)
    if root is None:
        raise BloodcellInputError("is not a YOLO dataset: expected images/ and labels/ folders side by side", path)
    classes, class_ids = read_yolo_classes(root)
    labels_dir, images_dir = root / "labels", root / "images"
    if path.suffix.lower() == ".txt" and path.name != "classes.txt":
        rel = path.relative_to(labels_dir).with_suffix("")
        image = find_image(images_dir / rel.parent, rel.name)
        if image is None:
            raise BloodcellInputError(f"no image named {rel.name}.* in {images_dir / rel.parent}", path)
        pairs = [(image, path)]
    else:
        pairs = []
        for image in sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                            and is_regular_file(p)):
            rel = image.relative_to(images_dir).with_suffix(".txt")
            pairs.append((image, labels_dir / rel))
        if not pairs:
            raise BloodcellInputError("has no images in images/", root)
    warnings: list[str] = []
    records = []
    for image, label_file in pairs:
        width, height = image_size(image)
        if label_file.exists():
            norm, labels, scores = parse_label_file(label_file, class_ids)
        else:
            norm, labels, scores = np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros(0)
        record = ImageRecord(
            file_name=image.relative_to(images_dir).as_posix(),
            width=width,
            height=height,
            boxes=yolo_to_xyxy(norm, width, height),
            labels=labels,
            scores=None if np.all(np.isnan(scores)) else scores,
            path=image,
            extra={"_annotation_file": str(label_file)},
        )
        records.append(check_boxes(record, label_file, warnings))
    return AnnotationSet(classes=classes, images=records, format="yolo", root=root, warnings=warnings)


def yolo_label_text(record: ImageRecord) -> str:
    """One image's label file: ``class cx cy w h`` (and score when the record has one)."""
    norm = xyxy_to_yolo(record.boxes, record.width, record.height)
    scores = record.score_list()
    lines = []
    for i in range(len(record)):
        fields = [str(int(record.labels[i]))] + [f"{v:.6f}" for v in norm[i]]
        if not math.isnan(scores[i]):
            fields.append(f"{scores[i]:.6f}")
        lines.append(" ".join(fields))
    return "\n".join(lines) + ("\n" if lines else "")


def data_yaml_text(classes: list[str]) -> str:
    import yaml

    return yaml.safe_dump(
        {"path": ".", "train": "images", "val": "images", "nc": len(classes), "names": list(classes)},
        sort_keys=False,
    )


def write_yolo_labels(record: ImageRecord, path: str | Path, exist: ExistPolicy = "refuse") -> Path:
    return atomic_write_text(path, yolo_label_text(record), exist=exist)
