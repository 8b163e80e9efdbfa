"""Cell crops for classifiers: where they come from, how they are cut, augmented and split.

A :class:`Sample` is one cell (an image and its box, or a whole field when there is no box) with its class, or with
a 0/1 vector for multi-label morphology (paper 001). Samples come from

* annotations (COCO, VOC, YOLO or an exported dataset): every reviewed box, ``attributes["labels"]`` for flags;
* a crop folder the export wrote (``crops/<class>/*.png`` + ``crops.csv``), or any ``<class>/<image>`` folder;
* a label CSV as ``../shared/data/wbc_types/labels.csv`` lays it out (``image,category``; or ``image,labels`` with
  ``;``-separated flags; or one 0/1 column per label), optionally with box columns, or with the cell boxes taken
  from an annotation set (``boxes`` + ``box_class``, e.g. BCCD's WBC boxes for the WBC-type labels).

Every sample keeps the identity of its image (``group``), so folds and validation splits keep all cells of one
photograph, and any augmented copy, on the same side.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..crops import CROP_CONTEXT, cell_crop
from ..errors import BloodcellInputError
from ..io.records import AnnotationSet
from ..untrusted import class_name, finite, image_file, inside, read_text, safe_relative

TRAINABLE_STATES = ("accepted", "corrected")
CSV_IMAGE_COLUMNS = ("image", "file_name", "filename", "crop")
BOX_COLUMNS = ("xmin", "ymin", "xmax", "ymax")


@dataclasses.dataclass
class Sample:
    path: Path
    box: np.ndarray | None
    """xyxy pixels of the cell in ``path``; None when the file is already the crop (or a whole field)."""
    target: int | np.ndarray
    """Class index, or a float 0/1 vector over the labels (multi-label)."""
    group: str
    """The source image's identity: samples of one group never straddle a split."""
    ref: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class SampleSet:
    classes: list[str]
    samples: list[Sample]
    multilabel: bool = False
    source: str = ""
    skipped: list[str] = dataclasses.field(default_factory=list)
    """Why images or cells were left out (ambiguous labels, no box), for the user to read."""

    def __len__(self) -> int:
        return len(self.samples)

    def targets(self) -> np.ndarray:
        if self.multilabel:
            return np.stack([np.asarray(s.target, dtype=np.float32) for s in self.samples]) if self.samples \
                else np.zeros((0, len(self.classes)), np.float32)
        return np.array([int(s.target) for s in self.samples], dtype=np.int64)

    def groups(self) -> np.ndarray:
        return np.array([s.group for s in self.samples], dtype=object)

    def counts(self) -> dict[str, int]:
        t = self.targets()
        if self.multilabel:
            return {c: int(t[:, i].sum()) for i, c in enumerate(self.classes)}
        return {c: int((t == i).sum()) for i, c in enumerate(self.classes)}

    def subset(self, index) -> SampleSet:
        return dataclasses.replace(self, samples=[self.samples[i] for i in np.asarray(index, dtype=np.int64)])

    def without(self, drop: list[str] | None = None, min_count: int = 0) -> SampleSet:
        """Leave out the named classes and those with fewer than ``min_count`` samples (single-label only)."""
        if self.multilabel:
            return self
        counts = self.counts()
        gone = set(drop or []) | {c for c, n in counts.items() if n < min_count}
        unknown = set(drop or []) - set(self.classes)
        if unknown:
            raise BloodcellInputError(f"cannot drop {sorted(unknown)}: the classes are {self.classes}")
        keep = [c for c in self.classes if c not in gone]
        if len(keep) < 2:
            raise BloodcellInputError(f"fewer than two classes left after dropping {sorted(gone)} ({counts})")
        new_index = {self.classes.index(c): i for i, c in enumerate(keep)}
        samples = [dataclasses.replace(s, target=new_index[int(s.target)]) for s in self.samples
                   if int(s.target) in new_index]
        notes = [f"class {c} left out ({counts[c]} sample(s))" for c in self.classes if c in gone]
        return dataclasses.replace(self, classes=keep, samples=samples, skipped=self.skipped + notes)


# --------------------------------------------------------------------------------------------------- sources


def samples_from_annotations(aset: AnnotationSet, classes: list[str] | None = None,
                             states: tuple[str, ...] = TRAINABLE_STATES, multilabel: bool = False) -> SampleSet:
    """One sample per reviewed box; ``classes`` keeps only those classes (in that order)."""
    chosen = list(classes) if classes else list(aset.classes)
    missing = [c for c in chosen if c not in aset.classes]
    if missing and not multilabel:
        raise BloodcellInputError(f"classes {missing} are not in the annotations ({aset.classes})")
    flag_names: list[str] = []
    picked = []
    for rec in aset.images:
        if rec.path is None:
            continue
        attrs, reviews = rec.attribute_list(), rec.review_list()
        for i in range(len(rec)):
            name = aset.classes[int(rec.labels[i])]
            if reviews[i] not in states or (not multilabel and name not in chosen):
                continue
            flags = list(attrs[i].get("labels", []))
            flag_names += [f for f in flags if f not in flag_names]
            picked.append((rec, i, name, flags))
    if multilabel:
        chosen = list(classes) if classes else sorted(flag_names)
        if not chosen:
            raise BloodcellInputError("no box carries multi-label flags (attributes 'labels')")
    samples = []
    for rec, i, name, flags in picked:
        target = (np.array([f in flags for f in chosen], dtype=np.float32) if multilabel
                  else chosen.index(name))
        samples.append(Sample(Path(rec.path), rec.boxes[i].copy(), target, rec.stem,
                              {"image": rec.file_name, "index": i, "object_id": rec.attribute_list()[i].get(
                                  "object_id", i)}))
    return SampleSet(chosen, samples, multilabel, f"{aset.format} annotations")


def samples_from_crop_folder(folder: str | Path, multilabel: bool = False) -> SampleSet:
    """The export's ``crops/`` (with ``crops.csv``), or any folder of ``<class>/<image files>``."""
    from ..io.images import is_image_path

    folder = Path(folder)
    index = folder / "crops.csv"
    rows: list[tuple[Path, str, str, list[str]]] = []
    if index.is_file():
        for k, row in enumerate(csv.DictReader(io.StringIO(read_text(index), newline=""))):
            if not row.get("crop") or not row.get("class"):
                raise BloodcellInputError(f"row {k + 2} lacks 'crop' or 'class'", index)
            flags = [f for f in (row.get("labels") or "").split(";") if f]
            crop = inside(folder, safe_relative(row["crop"]))  # the index names files in its own folder only
            rows.append((crop, class_name(row["class"], index), row.get("image_digest") or row["crop"], flags))
    else:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            rows += [(f, sub.name, f"{sub.name}/{f.stem}", []) for f in sorted(sub.iterdir()) if is_image_path(f)]
    if not rows:
        raise BloodcellInputError("holds no crops (expected crops.csv or <class>/<image> sub-folders)", folder)
    if multilabel:
        classes = sorted({f for *_, flags in rows for f in flags})
        if not classes:
            raise BloodcellInputError("no crop carries multi-label flags (crops.csv 'labels' column)", folder)
        samples = [Sample(p, None, np.array([c in flags for c in classes], np.float32), g, {"crop": str(p)})
                   for p, _, g, flags in rows]
    else:
        classes = sorted({name for _, name, _, _ in rows})
        samples = [Sample(p, None, classes.index(name), g, {"crop": str(p)}) for p, name, g, _ in rows]
    return SampleSet(classes, samples, multilabel, f"crop folder {folder}")


def _find(name: str, folders: list[Path]) -> Path | None:
    from ..io.images import find_image

    for folder in folders:
        if image_file(folder / name) is not None:  # a name leading to anything but an image finds nothing
            return folder / name
    for folder in folders:
        hit = find_image(folder, Path(name).stem)
        if image_file(hit) is not None:
            return hit
    return None


def samples_from_label_csv(path: str | Path, images: list[str | Path] | None = None,
                           boxes: AnnotationSet | None = None, box_class: str | None = None,
                           multilabel: bool = False) -> SampleSet:
    """Image-level labels (``image,category`` as in wbc_types), turned into cell samples.

    With ``boxes`` the cells are that annotation set's ``box_class`` boxes in each image: an image with as many
    such boxes as listed types, all the same type, gives one sample per box; an image whose boxes and types cannot
    be paired (two different types, or a count that differs) is left out and said so. Without ``boxes`` each row
    is one sample of the whole image, or of its box columns when the CSV has them.
    """
    path = Path(path)
    folders = [Path(p) for p in (images or [])] + [path.parent, path.parent / "images"]
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    rows = list(reader)
    image_col = next((c for c in CSV_IMAGE_COLUMNS if c in header), None)
    if image_col is None:
        raise BloodcellInputError(f"a label CSV needs an image column ({', '.join(CSV_IMAGE_COLUMNS)}); "
                                  f"its header is {header}", path)
    has_box = all(c in header for c in BOX_COLUMNS)
    label_cols = [c for c in header if c not in (image_col, *BOX_COLUMNS)]
    if "category" in header or "class" in header or "label" in header:
        mode, col = "single", next(c for c in ("category", "class", "label") if c in header)
    elif "labels" in header:
        mode, col = "flags", "labels"
    elif label_cols:
        mode, col = "columns", ""
    else:
        raise BloodcellInputError(f"no label column (category, class, label, labels, or one 0/1 column per "
                                  f"label); header {header}", path)
    if multilabel and mode == "single":
        raise BloodcellInputError("multi-label training needs 'labels' (;-separated) or 0/1 label columns", path)
    by_stem = {r.stem: r for r in boxes.images} if boxes is not None else {}
    if boxes is not None and box_class is not None and box_class not in boxes.classes:
        raise BloodcellInputError(f"box class {box_class!r} is not in the box annotations ({boxes.classes})")
    entries: list[tuple[Path, np.ndarray | None, object, str]] = []
    skipped: list[str] = []
    for row in rows:
        name = (row.get(image_col) or "").strip()
        file = _find(name, folders) if name else None
        if file is None:
            skipped.append(f"{name or '(empty)'}: image not found")
            continue
        if mode == "single":
            value: object = [t.strip() for t in (row[col] or "").split(",") if t.strip()]
        elif mode == "flags":
            value = [t.strip() for t in (row[col] or "").split(";") if t.strip()]
        else:
            value = [c for c in label_cols if (row[c] or "").strip() not in ("", "0", "0.0", "false", "False")]
        if mode == "single" and not value:
            skipped.append(f"{name}: no label")
            continue
        if boxes is None:
            box = np.array([finite(row[c], f"{name}: {c}", path) for c in BOX_COLUMNS]) if has_box else None
            entries.append((file, box, value, Path(name).stem))
            continue
        rec = by_stem.get(Path(name).stem)
        if rec is None:
            skipped.append(f"{name}: not in the box annotations")
            continue
        cell = [i for i in range(len(rec)) if box_class is None or boxes.classes[int(rec.labels[i])] == box_class]
        if not cell:
            skipped.append(f"{name}: no {box_class or ''} box".replace("  ", " "))
            continue
        if mode == "single" and (len(set(value)) != 1 or len(value) != len(cell)):
            skipped.append(f"{name}: {len(cell)} box(es) for types {value}: cannot pair them")
            continue
        if mode != "single" and len(cell) != 1:
            skipped.append(f"{name}: {len(cell)} boxes for one image-level label set")
            continue
        entries += [(file, rec.boxes[i].copy(), value, Path(name).stem) for i in cell]
    if not entries:
        raise BloodcellInputError(f"no usable sample ({len(skipped)} left out, e.g. {skipped[:3]})", path)
    if mode == "single" and not multilabel:
        classes = sorted({e[2][0] for e in entries})
        samples = [Sample(f, b, classes.index(v[0]), g, {"image": f.name}) for f, b, v, g in entries]
    else:
        classes = label_cols if mode == "columns" else sorted({t for _, _, v, _ in entries for t in v})
        samples = [Sample(f, b, np.array([c in v for c in classes], np.float32), g, {"image": f.name})
                   for f, b, v, g in entries]
    return SampleSet(classes, samples, mode != "single", f"label CSV {path.name}", skipped)


def _is_label_csv(path: Path) -> bool:
    try:
        header = [h.strip() for h in next(csv.reader(io.StringIO(read_text(path), newline="")), [])]
    except BloodcellInputError:
        return False
    return not {"label", "xmin"} <= set(header) or bool(set(header) & {"category", "labels"})


def load_samples(path: str | Path, images: list[str | Path] | None = None, boxes: str | Path | None = None,
                 box_class: str | None = None, classes: list[str] | None = None,
                 multilabel: bool = False) -> SampleSet:
    """Samples from any supported source (see module docstring); the error lists them when none fits."""
    from ..io.dataset import is_dataset
    from ..io.formats import read_annotations

    path = Path(path)
    if not path.exists():
        raise BloodcellInputError("no such file or folder", path)
    if path.suffix.lower() == ".csv" and _is_label_csv(path):
        aset = read_annotations(boxes) if boxes is not None else None
        return samples_from_label_csv(path, images, aset, box_class, multilabel)
    if path.is_dir() and not is_dataset(path) and ((path / "crops.csv").is_file() or (
            any(p.is_dir() for p in path.iterdir()) and not (path / "Annotations").is_dir()
            and not (path / "labels").is_dir())):
        return samples_from_crop_folder(path, multilabel)
    return samples_from_annotations(read_annotations(path), classes, multilabel=multilabel)


# ------------------------------------------------------------------------------------------------ cropping


def train_transforms(size: int):
    """Paper 000's augmentation: crop distortion, flips, the hue/brightness/saturation/contrast jitter; plus
    right-angle rotations (a cell has no up)."""
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.75, 1.0), ratio=(0.85, 1.18), antialias=True),
        v2.RandomHorizontalFlip(0.5),
        v2.RandomVerticalFlip(0.5),
        v2.RandomChoice([v2.RandomRotation((a, a)) for a in (0, 90, 180, 270)]),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05),
    ])


def eval_transforms(size: int):
    from torchvision.transforms import v2

    return v2.Resize((size, size), antialias=True)


def to_tensor(crop: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(crop, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div_(255.0)


class CropDataset(torch.utils.data.Dataset):
    """``(float 3xSxS tensor in 0..1, target)`` per sample; crops are cut once and kept (uint8) in memory.

    A sample with a box is cut by :func:`..crops.cell_crop`, exactly as inference and the export cut it; a sample
    without one (an exported crop, a whole image) is taken whole, padded square (an exported crop already is)."""

    def __init__(self, sset: SampleSet, size: int, margin: float = CROP_CONTEXT, augment: bool = False) -> None:
        missing = [str(s.path) for s in sset.samples if not s.path.is_file()]
        if missing:
            raise BloodcellInputError(f"{len(missing)} image file(s) not found, e.g. {missing[:3]}")
        self.sset, self.size, self.margin = sset, size, margin
        self.transform = train_transforms(size) if augment else eval_transforms(size)
        self._crops: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.sset.samples)

    def crop(self, index: int) -> np.ndarray:
        if index not in self._crops:
            from ..io.images import read_image

            sample = self.sset.samples[index]
            crop = cell_crop(read_image(sample.path), sample.box, self.margin)
            if max(crop.shape[:2]) > 2 * self.size:  # keep memory bounded; detail beyond 2x input is unused
                crop = np.asarray(eval_transforms(2 * self.size)(to_tensor(crop)).mul(255).byte().permute(1, 2, 0))
            self._crops[index] = crop
        return self._crops[index]

    def __getitem__(self, index: int):
        image = self.transform(to_tensor(self.crop(index)))
        target = self.sset.samples[index].target
        return image.clamp_(0, 1), (torch.as_tensor(target, dtype=torch.float32) if self.sset.multilabel
                                    else int(target))


def group_split(sset: SampleSet, fraction: float, salt: str = "bloodcell") -> tuple[np.ndarray, np.ndarray]:
    """Train and validation indices: a group (image) goes to validation when its hash falls below ``fraction``,
    so the split is stable as data grows and never separates cells of one photograph."""
    from .detection import is_validation

    groups = sset.groups()
    val_groups = {g for g in set(groups) if is_validation(str(g), fraction, salt)}
    if not val_groups or len(val_groups) == len(set(groups)):
        ordered = sorted(set(groups))
        val_groups = set(ordered[:: max(2, round(1 / max(fraction, 1e-3)))])
    is_val = np.array([g in val_groups for g in groups])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def stratified_group_folds(sset: SampleSet, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (train, test) index pairs, stratified by class and grouped by image (scikit-learn)."""
    from sklearn.model_selection import StratifiedGroupKFold

    y = sset.targets()
    strat = y if not sset.multilabel else (y * (2 ** np.arange(y.shape[1]))).sum(1).astype(int)
    smallest = min(Counter(strat.tolist()).values())
    if smallest < k:
        raise BloodcellInputError(f"a class has only {smallest} sample(s), fewer than {k} folds; drop it "
                                  "(--drop-class or --min-count) or use fewer folds")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in splitter.split(np.zeros(len(y)), strat, sset.groups().astype(str))]
