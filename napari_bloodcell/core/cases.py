"""Cases: the fields (images) of one slide, reviewed, counted and signed together, as a haematology lab works.

A case lives in a review project as ``PROJECT/cases/<name>.json``: its fields (the same image keys the project's
sidecars use, so a field's review is the one the image already has), the counting settings (target count, the
analyser's WBC count, reference ranges, the red-cell grading table) and the case sign-off. The sign-off records
each field's own signature; a later change to any field voids its signature and so the case's, as a field's
sign-off is voided by any change to it.
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from .annotations import HUMAN_STATES, AnnotationTable
from .atomic import atomic_write_text
from .errors import BloodcellInputError
from .io.images import is_image_path
from .review_project import ReviewProject, image_digest, image_key
from .untrusted import finite, image_file, inside, json_text, load_json, whole

CASE_FORMAT = "napari-bloodcell/case"
MAX_FIELDS = 10_000
TARGET_COUNTS = (100, 200)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.+-]{0,79}")
FIELD_STATES = ("not started", "in review", "done")


def check_case_name(name: str) -> str:
    """A case name names a file: letters, digits, space, ``_.+-``, at most 80 characters."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or name.endswith("."):
        raise BloodcellInputError(f"case name {str(name)[:40]!r} is not allowed; use letters, digits, spaces and "
                                  "_ . + - (at most 80 characters, starting with a letter or digit)")
    return name


@dataclasses.dataclass
class CaseSettings:
    target: int = 100
    """White cells the differential should reach (100 or 200, as labs count)."""
    wbc_per_litre: float | None = None
    """The analyser's WBC count in cells per litre (e.g. 7.2e9), for absolute counts."""
    reference: dict[str, list[float]] | None = None
    """Reference ranges per white-cell type in percent, ``{"neutrophil": [40, 75]}``; None for the defaults."""
    grading: str | None = None
    """Path of a laboratory's red-cell grading table; None for the default (see core.morphology)."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, path: Path | None = None) -> CaseSettings:
        data = data if isinstance(data, dict) else {}
        target = whole(data.get("target", 100), "target count", path, 10, 10_000)
        wbc = data.get("wbc_per_litre")
        wbc = None if wbc is None else finite(wbc, "WBC count per litre", path, bound=1e13)
        if wbc is not None and wbc <= 0:
            raise BloodcellInputError("the WBC count per litre must be positive", path)
        reference = data.get("reference")
        if reference is not None:
            reference = check_reference(reference, path)
        grading = data.get("grading")
        return cls(target, wbc, reference, None if grading is None else str(grading)[:1000])


def check_reference(reference: Any, path: Path | None = None) -> dict[str, list[float]]:
    if not isinstance(reference, dict) or len(reference) > 100:
        raise BloodcellInputError("reference ranges must be an object of class: [low, high] percent", path)
    out = {}
    for name, pair in reference.items():
        if not isinstance(pair, list) or len(pair) != 2:
            raise BloodcellInputError(f"reference range of {str(name)[:40]!r} must be [low, high]", path)
        low, high = (finite(v, f"{name}'s reference bound", path, bound=100) for v in pair)
        if not 0 <= low <= high <= 100:
            raise BloodcellInputError(f"reference range of {str(name)[:40]!r} must satisfy 0 <= low <= high <= 100",
                                      path)
        out[str(name)[:120]] = [low, high]
    return out


@dataclasses.dataclass
class Field:
    key: str
    file_name: str
    path: str | None
    digest: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class FieldStatus:
    key: str
    file_name: str
    state: str
    cells: int
    unreviewed: int
    uncertain_left: int
    signed_by: str | None


class Case:
    """One case of a review project."""

    def __init__(self, project: ReviewProject, name: str, data: dict[str, Any]) -> None:
        self.project = project
        self.name = check_case_name(name)
        self.data = data
        self.path = case_path(project, name)
        self.settings = CaseSettings.from_dict(data.get("settings"), self.path)
        self.fields = [_field(f, self.path) for f in data.get("fields", [])]

    # -- storage -------------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, project: ReviewProject, name: str, by: str = "", settings: CaseSettings | None = None) -> Case:
        path = case_path(project, name)
        if path.exists():
            raise BloodcellInputError(f"case {name!r} already exists in this project", project.folder)
        case = cls(project, name, {"format": CASE_FORMAT, "name": name, "created": time.time(), "created_by": by,
                                   "fields": [], "settings": (settings or CaseSettings()).as_dict(), "signed": None})
        case.save()
        return case

    @classmethod
    def open(cls, project: ReviewProject, name: str) -> Case:
        path = case_path(project, name)
        if not path.is_file():
            known = ", ".join(list_cases(project)) or "none"
            raise BloodcellInputError(f"no case {name!r} in this project (cases: {known})", project.folder)
        data = load_json(path, 64 << 20)
        if not isinstance(data, dict) or data.get("format") != CASE_FORMAT:
            raise BloodcellInputError("is not a case file", path)
        if not isinstance(data.get("fields", []), list) or len(data.get("fields", [])) > MAX_FIELDS:
            raise BloodcellInputError(f"fields must be a list of at most {MAX_FIELDS}", path)
        return cls(project, name, data)

    def save(self) -> Path:
        self.data["settings"] = self.settings.as_dict()
        self.data["fields"] = [f.as_dict() for f in self.fields]
        return atomic_write_text(self.path, json_text(self.data, indent=1), exist="replace")

    # -- fields --------------------------------------------------------------------------------------------------
    def add_images(self, images: list[str | Path], annotations: Any = None, points: Any = None,
                   review_default: str = "accepted") -> list[Field]:
        """Add images (files or folders of them) as fields; their existing reviews are kept. ``annotations`` (an
        AnnotationSet) or ``points`` (a PointSet) give cells to fields that have no review yet, matched by stem."""
        files = expand_images(images)
        known = {f.key for f in self.fields}
        added = []
        for path in files:
            digest = image_digest(path)
            key = image_key(path.name, digest)
            if key in known:
                continue
            if len(self.fields) >= MAX_FIELDS:
                raise BloodcellInputError(f"a case holds at most {MAX_FIELDS} fields", self.path)
            if not self.project.sidecar(key).exists():
                start_review(self.project, key, path, digest, annotations, points, review_default)
            field = Field(key, path.name, str(path.resolve()), digest)
            self.fields.append(field)
            known.add(key)
            added.append(field)
        self.save()
        return added

    def tables(self) -> list[tuple[Field, AnnotationTable | None, dict[str, Any] | None]]:
        out = []
        for f in self.fields:
            loaded = self.project.load(f.key)
            out.append((f, *(loaded if loaded else (None, None))))
        return out

    def status(self, loaded: list | None = None) -> list[FieldStatus]:
        return [field_status(f, t) for f, t, _ in (loaded if loaded is not None else self.tables())]

    # -- sign-off ------------------------------------------------------------------------------------------------
    def blocking(self, loaded: list | None = None) -> list[str]:
        """Why the case cannot be signed yet (empty when it can)."""
        loaded = loaded if loaded is not None else self.tables()
        reasons = []
        if not loaded:
            reasons.append("the case has no fields")
        for s in self.status(loaded):
            if s.uncertain_left:
                reasons.append(f"{s.file_name}: {s.uncertain_left} uncertain cell(s) unreviewed")
            elif s.state != "done":
                reasons.append(f"{s.file_name}: not signed ({s.state})")
        return reasons

    def sign(self, by: str) -> dict[str, Any]:
        if not by.strip():
            raise BloodcellInputError("cannot sign without a reviewer name")
        loaded = self.tables()
        reasons = self.blocking(loaded)
        if reasons:
            more = f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else ""
            raise BloodcellInputError("cannot sign the case: " + "; ".join(reasons[:3]) + more)
        self.data["signed"] = {"by": by, "at": time.time(),
                               "fields": {f.key: _field_signature(t) for f, t, _ in loaded}}
        self.save()
        return self.data["signed"]

    def signature_valid(self, loaded: list | None = None) -> bool:
        signed = self.data.get("signed")
        if not isinstance(signed, dict) or not isinstance(signed.get("fields"), dict):
            return False
        loaded = loaded if loaded is not None else self.tables()
        now = {f.key: _field_signature(t) for f, t, _ in loaded}
        return now == signed["fields"] and all(v is not None for v in now.values())

    @property
    def signed(self) -> dict[str, Any] | None:
        signed = self.data.get("signed")
        return signed if isinstance(signed, dict) else None


def _field_signature(table: AnnotationTable | None) -> list | None:
    if table is None or not table.signature_valid:
        return None
    return [table.signed.get("by"), table.signed.get("at"), table.signed.get("revision")]


def _field(data: Any, path: Path) -> Field:
    if not isinstance(data, dict):
        raise BloodcellInputError("a field is not an object", path)
    key, digest = data.get("key"), data.get("digest")
    from .untrusted import is_hex_digest

    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,80}", key) or not is_hex_digest(digest):
        raise BloodcellInputError(f"field {str(key)[:40]!r} has a malformed key or digest", path)
    file_name = data.get("file_name")
    p = data.get("path")
    return Field(key, str(file_name)[:300] if isinstance(file_name, str) else key,
                 p if isinstance(p, str) else None, digest)


def case_path(project: ReviewProject, name: str) -> Path:
    return inside(project.folder / "cases", f"{check_case_name(name)}.json")


def list_cases(project: ReviewProject) -> list[str]:
    return sorted(p.stem for p in (project.folder / "cases").glob("*.json") if NAME.fullmatch(p.stem))


def expand_images(items: list[str | Path]) -> list[Path]:
    """Image files named directly or found (sorted, not recursively) in named folders."""
    files: list[Path] = []
    for item in items:
        item = Path(item)
        if item.is_dir():
            found = [p for p in sorted(item.iterdir()) if is_image_path(p) and image_file(p)]
            if not found:
                raise BloodcellInputError("holds no readable images", item)
            files.extend(found)
        elif image_file(item) is not None:
            files.append(item)
        else:
            raise BloodcellInputError("is not a readable image", item)
    return files


def field_state(table: AnnotationTable | None) -> str:
    if table is None:
        return "not started"
    if table.signature_valid:
        return "done"
    if np.isin(table.col("review"), HUMAN_STATES).any() or table.revision > 0:
        return "in review"
    return "not started"


def field_status(field: Field, table: AnnotationTable | None) -> FieldStatus:
    if table is None:
        return FieldStatus(field.key, field.file_name, "not started", 0, 0, 0, None)
    review = table.col("review")
    return FieldStatus(field.key, field.file_name, field_state(table), int(table.active_mask().sum()),
                       int((review == "unreviewed").sum()), len(table.blocking_signoff()),
                       table.signed["by"] if table.signature_valid else None)


def start_review(project: ReviewProject, key: str, path: Path, digest: str, annotations: Any, points: Any,
                 review_default: str) -> None:
    """Write the first sidecar of a field from boxes or points that name its image; nothing when none do."""
    from .io.images import image_size

    width, height = image_size(path)
    image = {"file_name": path.name, "width": width, "height": height, "path": str(path.resolve()),
             "digest": digest}
    if annotations is not None:
        rec = next((r for r in annotations.images if Path(r.file_name).stem == path.stem), None)
        if rec is not None:
            table = AnnotationTable.from_record(rec, list(annotations.classes), review_default=review_default)
            project.save(key, table, image)
            return
    if points is not None:
        rec = points.by_stem().get(path.stem)
        if rec is not None:
            project.save(key, table_from_points(rec, list(points.classes), path, review_default), image)


def table_from_points(rec: Any, classes: list[str], image_path: Path, review_default: str) -> AnnotationTable:
    """Cells from points, as ``bloodcell points cells`` makes them (each point's box grown from the cell's outline,
    the point kept in the cell's attributes so it can be written back as a point), made by ``points``."""
    from .io.points import PointSet
    from .point_boxes import cells_from_point_set

    aset, _ = cells_from_point_set(PointSet(list(classes), [dataclasses.replace(rec, path=image_path)]))
    cells = aset.images[0]
    return AnnotationTable.from_record(dataclasses.replace(cells, sources=["points"] * len(cells)), list(classes),
                                       review_default=review_default)


def case_statistics(case: Case, loaded: list | None = None) -> Any:
    """The case's :class:`~.case_stats.CaseStats` under its own settings (target, WBC count, ranges, grading)."""
    from .case_stats import case_stats
    from .morphology import load_grading

    loaded = loaded if loaded is not None else case.tables()
    s = case.settings
    grading = load_grading(s.grading) if s.grading else None
    return case_stats([t for _, t, _ in loaded if t is not None], s.target, s.wbc_per_litre, s.reference, grading)
