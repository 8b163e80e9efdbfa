"""Names (and colours) of a label map's values, from the files datasets ship beside their NIfTI label maps.

A label map only holds numbers; the names live elsewhere. Looked for in the label map's folder, then its parent and
grandparent (an MSD task keeps ``dataset.json`` above ``labelsTr/``), the nearest folder first and, within a folder:

1. ``dataset.json``: MSD (``"labels": {"0": "background", "1": "Anterior"}``), nnU-Net v2 (``"labels":
   {"background": 0, "Anterior": 1}``; region entries that list several values are skipped) and this project's
   dataset manifest, which uses the MSD form;
2. ``LABELS.txt`` / ``labels.txt``: ITK-SNAP label descriptions (``IDX R G B A VIS MSH "name"``, which give colours
   too), FreeSurfer colour tables (``IDX name R G B A``) or plain ``value name`` lines;
3. ``labels.json``: this project's export form (``{"1": "left hippocampus"}``, see ``core/export_volumes.py``);

and last, the NIfTI intent name, which names the one foreground value of a binary mask.

Names are decoration: a broken or hostile names file never stops a volume from opening. It is skipped with one
warning and the search goes on. Every file is bounded (:data:`MAX_BYTES`, :data:`MAX_NAMES`), values must be
integers in ``0..2**31-1``, and names pass :func:`~napari_bloodcell.core.untrusted.class_name`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import BloodcellInputError
from ..untrusted import class_name, is_regular_file, load_json, one_line, read_text

MAX_BYTES = 1024 * 1024
"""Names files are small: a table of a few thousand labels is tens of kB."""
MAX_NAMES = 4096
MAX_VALUE = 2**31 - 1
SEARCH_LEVELS = 3
"""The label map's folder, its parent and its grandparent (``TaskXX/labelsTr/case.nii.gz``,
``dataset/versions/v0001/labelsTr/case.nii.gz``)."""
TEXT_FILES = ("LABELS.txt", "labels.txt")

Colour = tuple[float, float, float, float]
_ITK_SNAP = re.compile(r'^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+\d+\s+\d+\s+"(.*)"\s*$')
_FREESURFER = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$")
_PLAIN = re.compile(r"^\s*(\d+)\s*[\s:=,]\s*(.+?)\s*$")


@dataclasses.dataclass
class LabelNames:
    """What was found: names per value, colours (RGBA 0-1) where the file gives them, and where they came from."""

    names: dict[int, str] = dataclasses.field(default_factory=dict)
    colours: dict[int, Colour] = dataclasses.field(default_factory=dict)
    source: str | None = None
    """The file the names came from, or ``"NIfTI intent name"``; None when nothing named the values."""
    warnings: list[str] = dataclasses.field(default_factory=list)
    """One line per names file that was skipped, and why."""

    def name_of(self, value: int) -> str:
        """The value's name, else ``background`` for 0 and ``label N`` otherwise."""
        return self.names.get(int(value), "background" if int(value) == 0 else f"label {int(value)}")


class _Skip(Exception):
    """A names file that cannot be used (the message says why)."""


def _value(raw: Any) -> int:
    if isinstance(raw, bool):
        raise _Skip(f"label value {raw!r} is not an integer")
    try:
        value = int(raw) if isinstance(raw, int) else int(str(raw).strip(), 10)
    except ValueError:
        raise _Skip(f"label value {str(raw)[:40]!r} is not an integer") from None
    if not 0 <= value <= MAX_VALUE:
        raise _Skip(f"label value {value} is outside 0..{MAX_VALUE}")
    return value


def _name(raw: Any, path: Path) -> str:
    try:
        return class_name(raw, path)
    except BloodcellInputError as exc:
        raise _Skip(exc.problem) from None


def _bounded(pairs: Iterable[tuple[Any, Any]], path: Path) -> dict[int, str]:
    names: dict[int, str] = {}
    for raw_value, raw_name in pairs:
        if len(names) >= MAX_NAMES:
            raise _Skip(f"names more than {MAX_NAMES} label values")
        names[_value(raw_value)] = _name(raw_name, path)
    return names


def _from_json_labels(labels: Any, path: Path) -> dict[int, str]:
    """MSD's ``{"1": "name"}`` or nnU-Net v2's ``{"name": 1}`` (regions, which list several values, are skipped)."""
    if not isinstance(labels, dict):
        raise _Skip('"labels" is not a mapping of label values to names')
    if len(labels) > MAX_NAMES:
        raise _Skip(f"names more than {MAX_NAMES} label values")
    if all(isinstance(v, int) and not isinstance(v, bool) or isinstance(v, list) for v in labels.values()):
        return _bounded(((v, k) for k, v in labels.items() if not isinstance(v, list)), path)  # nnU-Net v2
    return _bounded(labels.items(), path)


def _dataset_json(path: Path) -> dict[int, str] | None:
    data = load_json(path, MAX_BYTES)
    if not isinstance(data, dict) or "labels" not in data:
        return None  # another tool's dataset.json, or a box dataset: not about label values
    return _from_json_labels(data["labels"], path)


def _labels_json(path: Path) -> dict[int, str] | None:
    return _from_json_labels(load_json(path, MAX_BYTES), path)


def _labels_text(path: Path) -> tuple[dict[int, str], dict[int, Colour]] | None:
    """ITK-SNAP, FreeSurfer or ``value name`` lines; ``#`` comments and lines that match none are ignored."""
    names: dict[int, str] = {}
    colours: dict[int, Colour] = {}
    for number, line in enumerate(read_text(path, MAX_BYTES).splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        rgba: tuple[str, ...] | None = None
        if m := _ITK_SNAP.match(line):
            value, name, rgba, opaque = m[1], m[6], (m[2], m[3], m[4], m[5]), 1.0  # alpha 0-1
        elif m := _FREESURFER.match(line):
            value, name, rgba, opaque = m[1], m[2], (m[3], m[4], m[5], m[6]), 0.0  # alpha 0-255, 0 = opaque
        elif m := _PLAIN.match(line):
            value, name = m[1], m[2]
            if len(name) > 1 and name[0] == name[-1] and name[0] in "\"'":
                name = name[1:-1]
        else:
            continue
        if len(names) >= MAX_NAMES:
            raise _Skip(f"names more than {MAX_NAMES} label values")
        v = _value(value)
        names[v] = _name(name, path)
        if rgba is not None:
            try:
                colours[v] = _colour(rgba, opaque)
            except ValueError:  # "1.2.3" as an alpha, a number of 5,000 digits
                raise _Skip(f"line {number} holds a colour that is not a number") from None
    return (names, colours) if names else None


def _colour(rgba: tuple[str, ...], opaque: float) -> Colour:
    """RGB 0-255 and an alpha that is ``opaque`` when fully opaque (ITK-SNAP: 1 on a 0-1 scale; FreeSurfer: 0 on a
    0-255 scale, where it is a transparency), as RGBA 0-1."""
    r, g, b = (min(int(c), 255) / 255 for c in rgba[:3])
    alpha = float(rgba[3])
    a = alpha if opaque == 1.0 else 1.0 - alpha / 255
    return r, g, b, min(max(a, 0.0), 1.0) if math.isfinite(a) else 1.0


def _candidates(folder: Path) -> list[tuple[Path, str]]:
    return [(folder / "dataset.json", "dataset"), *((folder / t, "text") for t in TEXT_FILES),
            (folder / "labels.json", "json")]


def find_label_names(path: str | Path, intent_name: str = "", values: Iterable[int] | None = None) -> LabelNames:
    """The names of label map ``path``'s values (see the module docstring for where they are looked for).

    ``values`` (the values the map holds) lets the intent name name a binary mask's one foreground value.
    """
    path = Path(path)
    found = folder_label_names(path.parent)
    foreground = sorted({int(v) for v in values or ()} - {0})
    if not found.names and intent_name and len(foreground) == 1:
        try:
            found.names = {foreground[0]: class_name(intent_name, path)}
            found.source = "NIfTI intent name"
        except BloodcellInputError:
            pass  # a control character or an empty name: the value stays unnamed
    return found


def folder_label_names(folder: str | Path, levels: int = SEARCH_LEVELS) -> LabelNames:
    """The names files of ``folder`` and up to ``levels - 1`` folders above it, nearest first (for a dataset
    folder, where no label map is named)."""
    found = LabelNames()
    folder, seen = Path(folder), set()
    for _ in range(levels):
        for candidate, kind in _candidates(folder):
            key = str(candidate).lower() if kind == "text" else str(candidate)  # LABELS.txt is labels.txt on macOS
            if key in seen or not is_regular_file(candidate):
                continue
            seen.add(key)
            try:
                if kind == "dataset":
                    names, colours = _dataset_json(candidate), {}
                elif kind == "json":
                    names, colours = _labels_json(candidate), {}
                else:
                    names, colours = _labels_text(candidate) or (None, {})
            except (_Skip, BloodcellInputError) as exc:
                reason = exc.problem if isinstance(exc, BloodcellInputError) else one_line(exc)
                found.warnings.append(f"label names in {candidate} not used: {reason}")
                continue
            if names:
                found.names, found.colours, found.source = names, colours, str(candidate)
                return found
        if folder.parent == folder:
            break
        folder = folder.parent
    return found
