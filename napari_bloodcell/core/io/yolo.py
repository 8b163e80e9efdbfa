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


def read_yolo_classes(root: Path) -> list[str]:
    """Class names from classes.txt (dataset or labels folder) or data.yaml."""
    for candidate in (root / "classes.txt", root / "labels" / "classes.txt"):
        if candidate.is_file():
            names = [ln.strip() for ln in candidate.read_text(encoding="utf-8").splitlines() if ln.strip()]
            if names:
                return names
    for name in YAML_NAMES:
        candidate = root / name
        if candidate.is_file():
            import yaml

            try:
                data = yaml.safe_load(candidate.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                raise BloodcellInputError(f"malformed YAML: {exc}", candidate) from exc
            names = data.get("names") if isinstance(data, dict) else None
            if isinstance(names, dict):
                try:
                    return [str(names[k]) for k in sorted(names, key=int)]
                except (TypeError, ValueError):
                    raise BloodcellInputError("'names' keys must be class ids 0..n-1", candidate) from None
            if isinstance(names, list) and names:
                return [str(n) for n in names]
            raise BloodcellInputError("has no 'names' list of classes", candidate)
    raise BloodcellInputError("no class list: add classes.txt (one name per line) or data.yaml with 'names'", root)


def parse_label_file(path: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised cx, cy, w, h boxes, class ids and scores (NaN when absent) from one label file."""
    boxes, labels, scores = [], [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise BloodcellInputError(f"not a text file: {exc}", path) from exc
    for line_no, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise BloodcellInputError(f"line {line_no}: {line.strip()!r} is not 'class cx cy w h [score]'", path) from None
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < n_classes:
            raise BloodcellInputError(
                f"line {line_no}: class id {parts[0]} is unknown (allowed 0..{n_classes - 1})", path
            )
        if len(values) in (5, 6):
            boxes.append(values[1:5])
            scores.append(values[5] if len(values) == 6 else math.nan)
        elif len(values) >= 7 and len(values) % 2 == 1:  # segmentation polygon: box around it
            xs, ys = values[1::2], values[2::2]
            boxes.append([(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)])
            scores.append(math.nan)
        else:
            raise BloodcellInputError(
                f"line {line_no}: expected 5 or 6 numbers ('class cx cy w h [score]'), got {len(values)}", path
            )
        labels.append(int(cls))
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(labels, dtype=np.int64), np.asarray(scores)


def read_yolo(path: str | Path) -> AnnotationSet:
    """Read a YOLO dataset folder, its data.yaml, or a single label file (with its image)."""
    path = Path(path)
    root = yolo_root(path)
    if root is None:
        raise BloodcellInputError("is not a YOLO dataset: expected images/ and labels/ folders side by side", path)
    classes = read_yolo_classes(root)
    labels_dir, images_dir = root / "labels", root / "images"
    if path.suffix.lower() == ".txt" and path.name != "classes.txt":
        rel = path.relative_to(labels_dir).with_suffix("")
        image = find_image(images_dir / rel.parent, rel.name)
        if image is None:
            raise BloodcellInputError(f"no image named {rel.name}.* in {images_dir / rel.parent}", path)
        pairs = [(image, path)]
    else:
        pairs = []
        for image in sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            rel = image.relative_to(images_dir).with_suffix(".txt")
            pairs.append((image, labels_dir / rel))
        if not pairs:
            raise BloodcellInputError("has no images in images/", root)
    warnings: list[str] = []
    records = []
    for image, label_file in pairs:
        width, height = image_size(image)
        if label_file.is_file():
            norm, labels, scores = parse_label_file(label_file, len(classes))
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
