"""Pascal VOC XML, in the BCCD layout: ``Annotations/NAME.xml`` beside ``JPEGImages/NAME.jpg``.

Coordinates are 1-based inclusive integer pixels (see :mod:`..boxes`). Beyond the standard ``pose``, ``truncated``
and ``difficult`` we write ``score``, ``source``, ``review`` and an ``attributes`` element per object so that a
review's state survives; other VOC tools ignore these extra elements.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import ExistPolicy, atomic_write_bytes
from ..boxes import voc_to_xyxy, xyxy_to_voc
from ..errors import BloodcellInputError
from ..untrusted import (
    class_name,
    finite,
    image_file,
    is_regular_file,
    one_line,
    optional_score,
    parse_json,
    read_bytes,
    read_text,
    whole,
)
from .images import find_image, image_size
from .records import REVIEW_STATES, AnnotationSet, ImageRecord, check_boxes

STANDARD_OBJECT_FIELDS = ("pose", "truncated", "difficult")
CLASS_LIST_NAMES = ("classes.txt", "labels.txt")


def is_voc_xml(path: str | Path) -> bool:
    """True for an XML file whose root element is ``<annotation>`` (cheap: reads only the start)."""
    path = Path(path)
    if path.suffix.lower() != ".xml" or not is_regular_file(path):
        return False
    try:
        for _event, elem in ET.iterparse(path, events=("start",)):
            return elem.tag == "annotation"
    except (ET.ParseError, OSError, ValueError):
        return False
    return False


def is_voc_dir(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "Annotations").is_dir()


def read_class_list(path: Path) -> list[str]:
    names = [class_name(line, path) for line in read_text(path, 1024 * 1024).splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise BloodcellInputError("class list has repeated names", path)
    return names


def _dataset_root(xml_path: Path) -> Path:
    return xml_path.parent.parent if xml_path.parent.name == "Annotations" else xml_path.parent


def _find_class_list(root: Path) -> Path | None:
    for name in CLASS_LIST_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def _text(elem: ET.Element, tag: str, default: str | None = None) -> str | None:
    child = elem.find(tag)
    return default if child is None or child.text is None else child.text.strip()


def _parse_object(obj: ET.Element, index: int, xml_path: Path) -> dict[str, Any]:
    name = _text(obj, "name")
    if not name:
        raise BloodcellInputError(f"object {index + 1} has no <name>", xml_path)
    name = class_name(name, xml_path)
    bnd = obj.find("bndbox")
    if bnd is None:
        raise BloodcellInputError(f"object {index + 1} ({name}) has no <bndbox>", xml_path)
    coords = []
    for key in ("xmin", "ymin", "xmax", "ymax"):
        coords.append(finite(_text(bnd, key), f"object {index + 1} ({name}): <{key}>", xml_path))
    attributes: dict[str, Any] = {}
    for key in STANDARD_OBJECT_FIELDS:
        value = _text(obj, key)
        if value is not None:
            attributes[key] = (whole(value, f"object {index + 1} ({name}): <{key}>", xml_path)
                               if value.lstrip("-").isdigit() else value[:200])
    extra = obj.find("attributes")
    if extra is not None:
        for item in extra.findall("attribute"):
            try:
                attributes[item.get("name", "")] = parse_json(item.text or "null", xml_path)
            except BloodcellInputError:
                attributes[item.get("name", "")] = item.text
    review = _text(obj, "review")
    if review is not None and review not in REVIEW_STATES:
        raise BloodcellInputError(f"object {index + 1} ({name}): unknown review state {review[:40]!r}; allowed: "
                                  f"{', '.join(REVIEW_STATES)}", xml_path)
    return {
        "name": name,
        "box": coords,
        "score": optional_score(_text(obj, "score"), f"object {index + 1} ({name}): <score>", xml_path),
        "source": _text(obj, "source"),
        "review": review,
        "attributes": attributes,
    }


def parse_voc_xml(xml_path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The image fields and the objects of one VOC file, as plain values (class names not yet indexed)."""
    xml_path = Path(xml_path)
    raw = read_bytes(xml_path, 64 * 1024 * 1024)
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise BloodcellInputError(f"malformed XML: {one_line(exc)}", xml_path) from None
    except RecursionError:
        raise BloodcellInputError("malformed XML: nested too deeply", xml_path) from None
    if root.tag != "annotation":
        raise BloodcellInputError(f"root element is <{root.tag}>; a VOC file has <annotation>", xml_path)
    fields = {
        "filename": _text(root, "filename") or f"{xml_path.stem}.jpg",
        "path": _text(root, "path"),
        "folder": _text(root, "folder"),
        "width": _text(root, "size/width"),
        "height": _text(root, "size/height"),
    }
    objects = [_parse_object(obj, i, xml_path) for i, obj in enumerate(root.findall("object"))]
    return fields, objects


def _locate_image(fields: dict[str, Any], xml_path: Path, image_dir: Path | None) -> Path | None:
    filename = Path(fields["filename"])
    root = _dataset_root(xml_path)
    candidates = []
    if image_dir is not None:
        candidates.append(image_dir / filename.name)
    candidates += [root / "JPEGImages" / filename.name, xml_path.parent / filename.name]
    if fields.get("path"):
        candidates.append(Path(fields["path"]))
    for candidate in candidates:
        if image_file(candidate) is not None:  # a <path> or <filename> naming any other file finds nothing
            return candidate
    for directory in [d for d in (image_dir, root / "JPEGImages", xml_path.parent) if d is not None]:
        found = find_image(directory, filename.stem)
        if image_file(found) is not None:
            return found
    return None


def _size(fields: dict[str, Any], image_path: Path | None, xml_path: Path) -> tuple[int, int]:
    try:
        width = whole(fields["width"], "<size><width>", xml_path, low=0, high=10**7)
        height = whole(fields["height"], "<size><height>", xml_path, low=0, high=10**7)
    except BloodcellInputError:
        width = height = 0  # a missing or broken <size> is read from the image, as VOC tools do
    if width > 0 and height > 0:
        return width, height
    if image_path is None:
        raise BloodcellInputError(
            "has no usable <size> and its image was not found (looked in JPEGImages/ and beside the XML)", xml_path
        )
    return image_size(image_path)


def read_voc(path: str | Path, classes: list[str] | None = None) -> AnnotationSet:
    """Read one VOC XML file or a VOC folder (``Annotations/`` + ``JPEGImages/``).

    The class list comes from ``classes`` if given, else from ``classes.txt``/``labels.txt`` in the dataset
    folder, else the sorted names found. A name missing from a given class list is an error.
    """
    path = Path(path)
    if path.is_dir():
        if not is_voc_dir(path):
            raise BloodcellInputError("is a folder without Annotations/; a VOC dataset has Annotations/*.xml", path)
        xml_files = sorted((path / "Annotations").glob("*.xml"))
        root, image_dir = path, path / "JPEGImages"
    else:
        xml_files = [path]
        root, image_dir = _dataset_root(path), None
    if not xml_files:
        raise BloodcellInputError("holds no .xml files in Annotations/", path)
    class_file = None if classes is not None else _find_class_list(root)
    fixed = classes if classes is not None else (read_class_list(class_file) if class_file else None)

    parsed = [(xml, *parse_voc_xml(xml)) for xml in xml_files]
    names = list(fixed) if fixed is not None else sorted({o["name"] for _, _, objs in parsed for o in objs})
    index = {name: i for i, name in enumerate(names)}
    warnings: list[str] = []
    records = []
    for xml, fields, objects in parsed:
        unknown = [o["name"] for o in objects if o["name"] not in index]
        if unknown:
            raise BloodcellInputError(
                f"class {unknown[0]!r} is not in the class list {names} ({class_file or 'given'})", xml
            )
        image_path = _locate_image(fields, xml, image_dir)
        width, height = _size(fields, image_path, xml)
        boxes = voc_to_xyxy([o["box"] for o in objects]) if objects else np.zeros((0, 4))
        scores = [o["score"] for o in objects]
        record = ImageRecord(
            file_name=Path(fields["filename"]).name,
            width=width,
            height=height,
            boxes=boxes,
            labels=[index[o["name"]] for o in objects],
            scores=None if all(math.isnan(s) for s in scores) else scores,
            sources=None if all(o["source"] is None for o in objects) else [o["source"] or "file" for o in objects],
            reviews=None if all(o["review"] is None for o in objects) else [o["review"] or "accepted" for o in objects],
            attributes=[o["attributes"] for o in objects],
            path=image_path,
            extra={"_annotation_file": str(xml)},
        )
        records.append(check_boxes(record, xml, warnings))
    return AnnotationSet(classes=names, images=records, format="voc", root=root, warnings=warnings)


def voc_xml_bytes(record: ImageRecord, classes: list[str], folder: str = "JPEGImages") -> bytes:
    """One image's boxes as VOC XML (integer 1-based corners; score/source/review/attributes kept)."""
    ann = ET.Element("annotation")
    ET.SubElement(ann, "folder").text = folder
    ET.SubElement(ann, "filename").text = Path(record.file_name).name
    if record.path is not None:
        ET.SubElement(ann, "path").text = str(record.path)
    ET.SubElement(ET.SubElement(ann, "source"), "database").text = "napari-bloodcell"
    size = ET.SubElement(ann, "size")
    ET.SubElement(size, "width").text = str(record.width)
    ET.SubElement(size, "height").text = str(record.height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(ann, "segmented").text = "0"
    voc_boxes = xyxy_to_voc(record.boxes)
    scores, sources, reviews = record.score_list(), record.source_list(), record.review_list()
    for i, attrs in enumerate(record.attribute_list()):
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = classes[int(record.labels[i])]
        for key, default in (("pose", "Unspecified"), ("truncated", 0), ("difficult", 0)):
            ET.SubElement(obj, key).text = str(attrs.pop(key, default))
        bnd = ET.SubElement(obj, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), voc_boxes[i]):
            ET.SubElement(bnd, key).text = str(int(value))
        if not math.isnan(scores[i]):
            ET.SubElement(obj, "score").text = repr(float(scores[i]))
        if record.sources is not None:
            ET.SubElement(obj, "source").text = sources[i]
        if record.reviews is not None:
            ET.SubElement(obj, "review").text = reviews[i]
        if attrs:
            extra = ET.SubElement(obj, "attributes")
            for key, value in attrs.items():
                ET.SubElement(extra, "attribute", name=str(key)).text = json.dumps(value)
    ET.indent(ann, space="\t")
    return ET.tostring(ann, encoding="utf-8", xml_declaration=False) + b"\n"


def write_voc_xml(record: ImageRecord, classes: list[str], path: str | Path, exist: ExistPolicy = "refuse") -> Path:
    return atomic_write_bytes(path, voc_xml_bytes(record, classes), exist=exist)
