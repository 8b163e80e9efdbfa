"""The case report: one A4 page (PDF, and the same page as PNG for the docs) plus a self-contained HTML twin.

A haematology lab files one page per slide: who reviewed it and whether it is signed, the white-cell differential
with its intervals (a bar chart beside the table), red-cell grades, a few cells of each class to show what was
counted, and the model-reviewer agreement by which a lab judges its pre-classifier. Drawn with matplotlib's own
PDF and Agg canvases on a private :class:`~matplotlib.figure.Figure`, so the global backend and pyplot state are
never touched (the plugin runs inside napari's Qt event loop). Names from files are drawn with mathtext off, so a
class called ``$x$`` is printed, not typeset.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from .atomic import ExistPolicy, atomic_write_bytes, atomic_write_text
from .case_report_data import MAX_ROWS, VALIDATE, ReportContent, Table, report_content
from .errors import BloodcellInputError

A4 = (8.27, 11.69)
MARGIN = 0.45
SMALL, BODY, HEAD = 6.5, 7.5, 9.5
ROW = 0.125
"""Inches per table row at the small font."""
RED, GREEN, GREY = "#b00020", "#1b5e20", "#666666"


class Page:
    """A figure addressed in inches from the top left, as a page is laid out."""

    def __init__(self) -> None:
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=A4, dpi=100)
        self.y = MARGIN

    def text(self, x: float, y: float, s: str, size: float = BODY, **kw: Any) -> Any:
        """Text whose cap height starts at ``y`` (placed on its baseline, so rows line up whatever the letters)."""
        y += size / 72 * 0.8
        return self.fig.text(x / A4[0], 1 - y / A4[1], s, fontsize=size, va="baseline", parse_math=False, **kw)

    def line(self, x0: float, x1: float, y: float, width: float = 0.5, color: str = "#999999") -> None:
        from matplotlib.lines import Line2D

        self.fig.add_artist(Line2D([x0 / A4[0], x1 / A4[0]], [1 - y / A4[1]] * 2, lw=width, color=color,
                                   transform=self.fig.transFigure))

    def axes(self, x: float, y: float, w: float, h: float) -> Any:
        return self.fig.add_axes((x / A4[0], 1 - (y + h) / A4[1], w / A4[0], h / A4[1]))

    def heading(self, x: float, y: float, s: str, width: float) -> float:
        self.text(x, y, s, HEAD, weight="bold")
        self.line(x, x + width, y + 0.17, 0.6, "#333333")
        return y + 0.22


def draw_table(page: Page, x: float, y: float, table: Table, widths: list[float]) -> float:
    """Rows of text at fixed column widths (first column left, numbers right); returns the y below it."""
    def row(cells: list[str], yy: float, **kw: Any) -> None:
        left = x
        for k, (cell, w) in enumerate(zip(cells, widths, strict=False)):
            if k == 0:
                page.text(left, yy, clip(cell, int(w * 72 / 3.7)), SMALL, **kw)
            else:
                page.text(left + w - 0.04, yy, cell, SMALL, ha="right", **kw)
            left += w

    row(table.header, y, weight="bold")
    page.line(x, x + sum(widths), y + ROW + 0.01)
    y += ROW + 0.03
    for k, cells in enumerate(table.rows[:MAX_ROWS]):
        flagged = k < len(table.flags) and table.flags[k]
        row(cells, y, color=RED if flagged else "black", weight="bold" if flagged else "normal")
        y += ROW
    if len(table.rows) > MAX_ROWS:
        page.text(x, y, f"+{len(table.rows) - MAX_ROWS} more", SMALL, color=GREY, style="italic")
        y += ROW
    if table.total:
        page.line(x, x + sum(widths), y)
        row(table.total, y + 0.02, weight="bold")
        y += ROW + 0.02
    return y + 0.04


def draw_bars(ax: Any, bars: list[tuple], size: float = SMALL) -> None:
    """The differential as horizontal bars with their exact 95% intervals over the reference ranges (grey), flagged
    types in red."""
    import numpy as np

    names = [b[0] for b in bars][::-1]
    pos = np.arange(len(bars))
    pc = np.asarray([b[1] for b in bars][::-1], dtype=float)
    low = np.asarray([b[2] for b in bars][::-1], dtype=float)
    high = np.asarray([b[3] for b in bars][::-1], dtype=float)
    colours = [RED if b[4] else "#4a6fa5" for b in bars][::-1]
    shown = np.nan_to_num(pc)
    for k, b in enumerate(bars[::-1]):
        if b[5] is not None:
            ax.barh(k, b[5][1] - b[5][0], left=b[5][0], height=0.9, color="#e3e3e3", zorder=0)
    ax.barh(pos, shown, color=colours, height=0.6)
    err = np.nan_to_num(np.stack([shown - low, high - shown]).clip(min=0))
    ax.errorbar(shown, pos, xerr=err, fmt="none", ecolor="black", elinewidth=0.7, capsize=2)
    ax.set_yticks(pos, [clip(n, 18) for n in names])
    for label in ax.get_yticklabels():
        label.set_parse_math(False)
    top = float(np.nanmax(np.concatenate([high, [10.0]]))) if len(bars) else 100.0
    ax.set_xlim(0, min(100.0, top * 1.08 + 2))
    ax.set_xlabel("% of white cells\nwhiskers: exact 95% interval; grey: reference", fontsize=size)
    ax.tick_params(labelsize=size, length=2)
    ax.grid(axis="x", alpha=0.3, lw=0.5)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if not bars:
        ax.text(0.5, 0.5, "no white cells counted", transform=ax.transAxes, ha="center", fontsize=size)


def draw_page(c: ReportContent) -> Any:
    """The report page as a matplotlib Figure."""
    page = Page()
    left, width = MARGIN, A4[0] - 2 * MARGIN
    page.text(left, page.y, "Blood smear case report", 14, weight="bold")
    page.text(left + width, page.y + 0.02, f"Report date {c.date}", BODY, ha="right")
    y = page.y + 0.32
    page.line(left, left + width, y - 0.06, 1.0, "#333333")
    info = [("Case", c.case), ("Reviewer", c.reviewer), ("Fields", c.fields), ("Models", c.models),
            ("Counting", c.settings)]
    for k, (key, value) in enumerate(info):
        col, row = divmod(k, 3)
        page.text(left + col * width / 2, y + row * 0.15, f"{key}:", BODY, weight="bold")
        page.text(left + col * width / 2 + 0.65, y + row * 0.15, value, BODY)
    y += 3 * 0.15 + 0.02
    for line in wrap(c.sign_line, 100)[:3]:
        page.text(left, y, line, BODY + 1, weight="bold", color=GREEN if c.signed else RED)
        y += 0.16
    y += 0.14

    # the differential: table on the left, bar chart on the right
    y = page.heading(left, y, "White-cell differential", width)
    absolute = len(c.white.header) == 7
    widths = [1.25, 0.45, 0.4, 0.75] + ([0.55] if absolute else []) + [0.7, 0.35]
    top = y
    y = draw_table(page, left, y, c.white, widths)
    page.text(left, y, c.count_line, BODY, weight="bold", color=GREEN if c.stats.remaining == 0 else RED)
    y += 0.16
    for note in (line for n in c.white_notes for line in wrap(n, 90)):
        page.text(left, y, note, SMALL, color=GREY)
        y += ROW
    chart_x = left + max(sum(widths), 4.45) + 0.95
    chart_h = max(1.3, y - top - 0.35)
    ax = page.axes(chart_x, top + 0.02, left + width - chart_x, chart_h)
    draw_bars(ax, c.bars[:MAX_ROWS])
    y = max(y, top + chart_h + 0.42) + 0.12

    # red cells (left) and agreement (right)
    half = (width - 0.3) / 2
    y0 = y
    ry = page.heading(left, y0, "Red-cell morphology", half)
    ry = draw_table(page, left, ry, c.red, [1.0, 0.4, 0.75, 0.65, 0.73])
    page.text(left, ry, c.red_line, SMALL, weight="bold")
    ry += ROW
    for line in wrap("Grading: " + c.grading_source, 72) + wrap(VALIDATE, 72):
        page.text(left, ry, line, SMALL, color=GREY)
        ry += ROW
    ax_ = left + half + 0.3
    ay = page.heading(ax_, y0, "Model–reviewer agreement", half)
    ay = draw_table(page, ax_, ay, c.agreement, [1.1, 0.6, 0.55, 0.5, 0.75])
    for line in wrap(c.agreement_line, 72) + wrap("Share of reviewed cells whose final class equals the model's "
                                                  "pre-classification (exact 95% interval).", 72):
        page.text(ax_, ay, line, SMALL, color=GREY)
        ay += ROW
    y = max(ry, ay) + 0.15

    # gallery
    y = page.heading(left, y, "Representative cells (most confident reviewed cells per class)", width)
    y = draw_gallery(page, left, y, width, c)
    page.text(left, A4[1] - MARGIN + 0.1, "napari-bloodcell case report · exact (Clopper–Pearson) 95% intervals · "
              "reference ranges and grading thresholds are defaults a laboratory must validate", SMALL - 0.5,
              color=GREY)
    return page.fig


def draw_gallery(page: Page, x: float, y: float, width: float, c: ReportContent) -> float:
    """Classes in two columns: the class name, then its crops in a row."""
    from .case_report_data import CROPS_PER_CLASS

    room = A4[1] - MARGIN - y - 0.25 - ROW * (len(c.gallery_notes) + bool(c.gallery_more))
    per_column = max(1, -(-len(c.gallery) // 2))
    cell = min(0.62, (width / 2 - 1.05) / CROPS_PER_CLASS - 0.05, max(0.3, room / per_column - 0.06))
    col_w = width / 2
    for k, (name, crops) in enumerate(c.gallery):
        col, row = divmod(k, per_column)
        cx, cy = x + col * col_w, y + row * (cell + 0.06)
        page.text(cx, cy + cell / 2 - 0.05, clip(name, 18), SMALL, weight="bold")
        if not crops:
            page.text(cx + 0.95, cy + cell / 2 - 0.05, "no image available", SMALL, color=GREY)
        for j, crop in enumerate(crops[:CROPS_PER_CLASS]):
            ax = page.axes(cx + 0.95 + j * (cell + 0.05), cy, cell, cell)
            ax.imshow(crop, interpolation="lanczos")
            ax.set_axis_off()
    y += per_column * (cell + 0.06) if c.gallery else 0
    if c.gallery_more:
        page.text(x, y, f"+{c.gallery_more} more classes not shown", SMALL, color=GREY, style="italic")
        y += ROW
    for note in c.gallery_notes:
        page.text(x, y, note, SMALL, color=RED)
        y += ROW
    return y


def clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def figure_bytes(fig: Any, fmt: str, dpi: float = 100) -> bytes:
    """The page rendered by matplotlib's PDF or Agg canvas, without pyplot."""
    if fmt == "pdf":
        from matplotlib.backends.backend_pdf import FigureCanvasPdf as Canvas
    else:
        from matplotlib.backends.backend_agg import FigureCanvasAgg as Canvas
    Canvas(fig)
    buffer = io.BytesIO()
    meta = {"Title": "Blood smear case report", "Creator": "napari-bloodcell"} if fmt == "pdf" else None
    fig.savefig(buffer, format=fmt, dpi=dpi, metadata=meta)
    return buffer.getvalue()


def _check_targets(paths: list[Path], exist: ExistPolicy) -> None:
    if exist == "refuse":
        for path in paths:
            if path.exists():
                raise BloodcellInputError("already exists; refusing to overwrite it (choose another name or move "
                                          "the file away)", path)


def write_case_report(case: Any, out: Path, reviewer: str | None = None, exist: ExistPolicy = "refuse",
                      loaded: list | None = None) -> tuple[Path, Path]:
    """Write the one-page PDF at ``out`` (``.pdf``) and its HTML twin beside it; returns (pdf, html).

    Both targets are checked before either is written, so a refusal leaves nothing half done."""
    from .case_report_html import report_html

    out = Path(out)
    if out.suffix.lower() != ".pdf":
        raise BloodcellInputError("the report must be a .pdf file (its HTML twin is written beside it)", out)
    html_path = out.with_suffix(".html")
    _check_targets([out, html_path], exist)
    content = report_content(case, reviewer, loaded)
    pdf = figure_bytes(draw_page(content), "pdf")
    html = report_html(content)
    atomic_write_bytes(out, pdf, exist=exist)
    atomic_write_text(html_path, html, exist=exist)
    return out, html_path


def render_preview_png(case: Any, out: Path, reviewer: str | None = None, exist: ExistPolicy = "refuse",
                       loaded: list | None = None, dpi: float = 110) -> Path:
    """The same page as a PNG (for the docs' screenshot, or a quick look without a PDF viewer)."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise BloodcellInputError("the preview must be a .png file", out)
    _check_targets([out], exist)
    atomic_write_bytes(out, figure_bytes(draw_page(report_content(case, reviewer, loaded)), "png", dpi), exist=exist)
    return out
