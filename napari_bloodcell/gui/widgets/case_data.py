"""What the Case tab keeps in memory and reads in the background: the case's tables, each sidecar read once, and a
field's pixels checked against the content hash the case recorded. No Qt here: the functions run in workers."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from ...core.annotations import AnnotationTable
from ...core.case_stats import CaseStats, case_queue
from ...core.cases import Case, Field, FieldStatus, case_statistics
from ...core.errors import BloodcellInputError
from ...core.review_project import ReviewProject, image_digest


@dataclasses.dataclass
class CaseData:
    """A case and its fields' tables in memory: each sidecar read once; the open field's entry is its live table."""

    case: Case
    tables: dict[str, AnnotationTable | None]
    images: dict[str, dict[str, Any] | None]
    statuses: list[FieldStatus] = dataclasses.field(default_factory=list)
    queue: list[tuple[str, int, float]] = dataclasses.field(default_factory=list)
    stats: CaseStats | None = None

    @classmethod
    def load(cls, folder: Path, name: str) -> CaseData:
        """In a worker: the case, every sidecar, the fields' states, the case queue and the statistics."""
        case = Case.open(ReviewProject(folder, create=False), name)
        loaded = case.tables()
        data = cls(case, {f.key: t for f, t, _ in loaded}, {f.key: i for f, _, i in loaded})
        data.statuses = case.status(loaded)
        data.queue = data.case_queue()
        data.stats = case_statistics(case, loaded)
        return data

    @property
    def fields(self) -> list[Field]:
        return self.case.fields

    def loaded(self) -> list[tuple[Field, AnnotationTable | None, dict[str, Any] | None]]:
        return [(f, self.tables.get(f.key), self.images.get(f.key)) for f in self.fields]

    def index(self, key: str | None) -> int:
        return next((k for k, f in enumerate(self.fields) if f.key == key), -1)

    def case_queue(self) -> list[tuple[str, int, float]]:
        return case_queue([(f.key, self.tables.get(f.key)) for f in self.fields])

    def classes(self) -> list[str]:
        return next((t.classes for t in self.tables.values() if t is not None), ["RBC", "WBC", "Platelets"])


def field_pixels(project: ReviewProject, field: Field, image: dict[str, Any] | None) -> tuple[np.ndarray, str]:
    """In a worker: the field's pixels, from its file (or the copy the project kept), checked by content hash."""
    from ...core.io.images import read_image

    path = next((Path(p) for p in (field.path, (image or {}).get("path")) if p and Path(p).is_file()), None)
    path = path or project.kept_image(field.digest)
    if path is None:
        raise BloodcellInputError(f"the image of field {field.file_name} is not found (it was {field.path}); put "
                                  "it back or add it to the case again")
    if image_digest(path) != field.digest:
        raise BloodcellInputError(f"{field.file_name} has changed since it was added to the case (its content hash "
                                  "differs); add the new image to the case instead", path)
    return read_image(path), str(path)
