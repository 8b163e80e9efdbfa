"""What the case report says, as formatted text and cell crops, shared by its PDF and HTML renderings.

The PDF (:mod:`.case_report`) and its HTML twin (:mod:`.case_report_html`) must never disagree, so every number is
formatted once, here, from :func:`~.cases.case_statistics` (the same numbers the Case panel and ``bloodcell case``
show). Class and file names come from files others made: they are kept as plain text, cut to a bounded length and
stripped of control characters; each renderer escapes them for its own format.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from .case_stats import CaseStats
from .morphology import GRADE_WORDS, NORMAL_TYPES, canonical, is_red_cell_class

CROPS_PER_CLASS = 4
GALLERY_CLASSES = 10
CROP_PIXELS = 96
"""Gallery crops are resized to this many pixels a side: enough on paper, small in the files."""
MAX_ROWS = 10
"""Table rows shown on the page; further classes are summed up as ``+N more``."""
VALIDATE = ("Grading thresholds and reference ranges are defaults: a laboratory must validate its own before "
            "reporting.")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain(text: Any, limit: int = 120) -> str:
    """An untrusted name as one bounded line of text (escaping is the renderer's job)."""
    text = " ".join(_CONTROL.sub(" ", str(text)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pct(value: float) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.1f}"


def interval(low: float, high: float) -> str:
    return "–" if not (math.isfinite(low) and math.isfinite(high)) else f"{low:.1f}–{high:.1f}"


def when(seconds: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(seconds)))
    except (TypeError, ValueError, OverflowError, OSError):
        return "unknown time"


@dataclasses.dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    """Every row: the HTML shows them all, the page the first :data:`MAX_ROWS` and ``+N more``."""
    total: list[str] | None = None
    flags: list[bool] = dataclasses.field(default_factory=list)
    """Rows to highlight (outside the reference range)."""


@dataclasses.dataclass
class ReportContent:
    case: str
    reviewer: str
    signed: bool
    sign_line: str
    date: str
    fields: str
    models: str
    settings: str
    white: Table
    count_line: str
    white_notes: list[str]
    bars: list[tuple[str, float, float, float, bool, tuple[float, float] | None]]
    """(type, percent, low, high, flagged, reference range) for the differential's bar chart."""
    red: Table
    red_line: str
    grading_source: str
    agreement: Table
    agreement_line: str
    gallery: list[tuple[str, list[np.ndarray]]]
    gallery_more: int
    gallery_notes: list[str]
    stats: CaseStats


def report_content(case: Any, reviewer: str | None = None, loaded: list | None = None,
                   now: float | None = None) -> ReportContent:
    """Everything the report shows, formatted."""
    from .cases import case_statistics

    loaded = loaded if loaded is not None else case.tables()
    stats = case_statistics(case, loaded)
    signed = case.signed
    valid = bool(signed) and case.signature_valid(loaded)
    signer = plain(signed.get("by", ""), 60) if signed else ""
    if valid:
        sign_line = f"Signed by {signer} on {when(signed.get('at'))}"
    else:
        reasons = [plain(r, 90) for r in case.blocking(loaded)]
        if signed:
            reasons.insert(0, f"the signature of {signer} was voided by later changes")
        shown = "; ".join(reasons[:2]) or "ready to sign, not yet signed"
        sign_line = f"NOT SIGNED: {shown}" + (f" (+{len(reasons) - 2} more)" if len(reasons) > 2 else "")
    models = [plain(m, 60) for m in stats.models]
    settings = case.settings
    wbc = f"WBC count {settings.wbc_per_litre / 1e9:.2f} ×10⁹/L" if settings.wbc_per_litre else "WBC count not entered"
    gallery, gallery_more, notes = gallery_crops(case, loaded, gallery_order(stats, loaded))
    white, bars = white_table(stats, bool(settings.wbc_per_litre))
    red, red_line = red_table(stats)
    agree, agree_line = agreement_table(stats)
    return ReportContent(
        case=plain(case.name, 80), reviewer=signer or plain(reviewer or "", 60) or "not given", signed=valid,
        sign_line=sign_line, date=when(time.time() if now is None else now), fields=str(len(loaded)),
        models=", ".join(models[:3]) + (f" (+{len(models) - 3} more)" if len(models) > 3 else "") or "none recorded",
        settings=f"target {stats.target} white cells; {wbc}", white=white, count_line=count_line(stats),
        white_notes=white_notes(stats), bars=bars, red=red, red_line=red_line,
        grading_source=plain(stats.grading.get("source", ""), 300), agreement=agree, agreement_line=agree_line,
        gallery=gallery, gallery_more=gallery_more, gallery_notes=notes, stats=stats)


def count_line(stats: CaseStats) -> str:
    if stats.white_total >= stats.target:
        return f"{stats.white_total} of {stats.target} white cells counted (target reached)"
    return f"{stats.white_total} of {stats.target} white cells: {stats.remaining} more needed"


def white_table(stats: CaseStats, absolute: bool) -> tuple[Table, list]:
    header = ["Type", "Count", "%", "95% CI"] + (["×10⁹/L"] if absolute else []) + ["Reference %", "Flag"]
    rows, flags, bars = [], [], []
    for r in stats.white:
        ref = f"{r.reference[0]:g}–{r.reference[1]:g}" if r.reference else "–"
        flag = {"low": "L", "high": "H"}.get(r.flag or "", "")
        cells = [plain(r.name, 60), str(r.count), pct(r.percent), interval(r.low, r.high)]
        cells += [f"{r.per_litre / 1e9:.2f}" if r.per_litre is not None else "–"] if absolute else []
        rows.append(cells + [ref, flag])
        flags.append(bool(flag))
        bars.append((plain(r.name, 60), r.percent, r.low, r.high, bool(flag), r.reference))
    total = ["Total", str(stats.white_total), "100.0" if stats.white_total else "–", ""]
    total += ([f"{sum(r.per_litre or 0 for r in stats.white) / 1e9:.2f}" if absolute and stats.white_total else ""]
              if absolute else []) + ["", ""]
    return Table(header, rows, total, flags), bars


def white_notes(stats: CaseStats) -> list[str]:
    notes = [f"Not classed (smudge/artefact): {stats.not_classed}, reported apart, outside the differential"]
    if stats.unreviewed:
        notes.append(f"{stats.unreviewed} counted white cell(s) still carry the model's unreviewed class")
    other = [f"{plain(k, 28)} {v}" for k, v in stats.other.items() if v]
    if other:
        notes.append("Counted apart: " + ", ".join(other[:5]) + (f" (+{len(other) - 5} more)" if len(other) > 5 else ""))
    notes.append(f"Reference ranges: {plain(stats.reference_source, 120)}")
    return notes


def red_table(stats: CaseStats) -> tuple[Table, str]:
    rows = []
    for r in stats.red:
        grade = "normal" if r.grade == "normal" else f"{r.grade} ({GRADE_WORDS[r.grade]})" if r.grade in \
            GRADE_WORDS else "not graded"
        rows.append([plain(r.name, 60), str(r.count), pct(r.percent), interval(r.low, r.high), grade])
    table = Table(["Morphology", "Count", "% of red cells", "95% CI", "Grade"], rows)
    if not stats.red_total:
        return table, "No red cells classed in this case"
    line = f"{stats.red_total} red cells classed"
    return table, line + ("" if rows else "; no abnormal morphology classed")


def agreement_table(stats: CaseStats) -> tuple[Table, str]:
    rows = [[plain(a.name, 60), str(a.reviewed), str(a.agreed), pct(a.percent), interval(a.low, a.high)]
            for a in stats.agreement]
    t = stats.agreement_total
    total = [t.name.capitalize(), str(t.reviewed), str(t.agreed), pct(t.percent), interval(t.low, t.high)] if t else None
    line = (f"Agreement over {t.name} {pct(t.percent)}% ({t.agreed} of {t.reviewed} reviewed cells kept the model's "
            "class)"
            if t else "No reviewed model-classified cells yet")
    return Table(["Model class", "Reviewed", "Agreed", "%", "95% CI"], rows, total), line


def gallery_order(stats: CaseStats, loaded: list) -> list[str]:
    """White types in the differential's order, then abnormal red cells, plain red cells and the rest."""
    order = [r.name for r in stats.white if r.count] + [r.name for r in stats.red if r.count]
    names = dict.fromkeys(c for _, t, _ in loaded if t is not None for c in t.classes)
    red = [c for c in names if is_red_cell_class(c) and canonical(c) in NORMAL_TYPES]
    return list(dict.fromkeys(order + red + [c for c in names if c not in order and c not in red]))


def gallery_crops(case: Any, loaded: list, order: list[str]) -> tuple[list[tuple[str, list[np.ndarray]]], int,
                                                                       list[str]]:
    """Up to :data:`CROPS_PER_CLASS` reviewed cells per class, the model's most confident accepted ones first,
    then corrected ones; fields whose image cannot be read are skipped and named."""
    candidates: dict[str, list[tuple[int, float, int, int]]] = {}
    for f_index, (_, table, _) in enumerate(loaded):
        if table is None:
            continue
        review, labels, scores = table.col("review"), table.col("label"), table.col("score")
        for pos in np.flatnonzero(np.isin(review, ("accepted", "corrected"))):
            name = table.classes[int(labels[pos])]
            score = float(scores[pos]) if np.isfinite(scores[pos]) else -1.0
            candidates.setdefault(name, []).append((int(review[pos] != "accepted"), -score, f_index, int(pos)))
    shown = [c for c in order if c in candidates]
    images: dict[int, np.ndarray | None] = {}
    problems: dict[str, str] = {}
    gallery = []
    for name in shown[:GALLERY_CLASSES]:
        crops = []
        for _, _, f_index, pos in sorted(candidates[name]):
            if f_index not in images:
                images[f_index] = field_pixels(case, loaded[f_index], problems)
            pixels = images[f_index]
            if pixels is not None:
                crops.append(small_crop(pixels, loaded[f_index][1].col("box")[pos]))
            if len(crops) == CROPS_PER_CLASS:
                break
        gallery.append((plain(name, 60), crops))
    notes = []
    if problems:
        listed = ", ".join(f"{plain(k, 40)} ({v})" for k, v in list(problems.items())[:3])
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        notes.append(f"Image not available, field skipped in the gallery: {listed}{more}")
    if not shown:
        notes.append("No reviewed cells to show yet")
    return gallery, max(0, len(shown) - GALLERY_CLASSES), notes


def field_pixels(case: Any, entry: tuple, problems: dict[str, str]) -> np.ndarray | None:
    """The field's pixels when its image is there and is the one reviewed (same content hash), else None."""
    from .errors import BloodcellInputError
    from .io.images import read_image
    from .review_project import image_digest

    field, _, image = entry
    paths = [field.path, (image or {}).get("path")]
    kept = case.project.kept_image(field.digest)
    paths = [Path(p) for p in paths if isinstance(p, str) and p] + ([kept] if kept else [])
    for path in paths:
        if not path.is_file():
            continue
        try:
            if image_digest(path, length=len(field.digest)) != field.digest:
                problems[field.file_name] = "image file changed since review"
                continue
            problems.pop(field.file_name, None)
            return read_image(path)
        except (BloodcellInputError, OSError) as exc:
            problems[field.file_name] = "unreadable: " + plain(getattr(exc, "problem", exc), 60)
    problems.setdefault(field.file_name, "missing")
    return None


def small_crop(pixels: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The cell as a classifier sees it (:func:`~.crops.cell_crop`), resized for the page."""
    from PIL import Image

    from .crops import cell_crop

    crop = cell_crop(pixels, box)
    if crop.ndim == 2:
        crop = np.repeat(crop[..., None], 3, axis=2)
    return np.asarray(Image.fromarray(crop).resize((CROP_PIXELS, CROP_PIXELS), Image.Resampling.LANCZOS))
