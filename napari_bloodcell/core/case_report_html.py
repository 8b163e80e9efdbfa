"""The case report's HTML twin: the same numbers as the PDF page, in one self-contained file.

Labs paste reports into other systems and open them years later, so nothing is linked: the bar chart and the
cell crops are inlined as base64 PNG, the style sheet is inline, and there is no script. Every piece of text (class
and file names come from files others made) goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
from typing import Any

from .case_report_data import VALIDATE, ReportContent, Table

STYLE = """
body{font-family:Helvetica,Arial,sans-serif;font-size:13px;max-width:820px;margin:20px auto;color:#111}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;border-bottom:1px solid #333;margin:18px 0 6px}
table{border-collapse:collapse;margin:4px 0}th,td{padding:2px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{border-bottom:1px solid #999}
tr.total td{border-top:1px solid #999;font-weight:bold}tr.flag td{color:#b00020;font-weight:bold}
.note{color:#555;font-size:12px;margin:2px 0}.bad{color:#b00020;font-weight:bold}.good{color:#1b5e20;font-weight:bold}
.gallery td{text-align:left;vertical-align:middle}.gallery img{width:64px;height:64px;margin-right:3px}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 10px;margin:6px 0}dt{font-weight:bold}dd{margin:0}
"""


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def table_html(t: Table) -> str:
    parts = ["<table><thead><tr>", *(f"<th>{esc(h)}</th>" for h in t.header), "</tr></thead><tbody>"]
    for k, row in enumerate(t.rows):
        flagged = k < len(t.flags) and t.flags[k]
        parts.append('<tr class="flag">' if flagged else "<tr>")
        parts.extend(f"<td>{esc(cell)}</td>" for cell in row)
        parts.append("</tr>")
    if t.total:
        parts.append('<tr class="total">' + "".join(f"<td>{esc(cell)}</td>" for cell in t.total) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def chart_png(c: ReportContent) -> bytes:
    """The differential's bar chart alone, drawn as on the PDF page."""
    from matplotlib.figure import Figure

    from .case_report import draw_bars, figure_bytes

    fig = Figure(figsize=(5.2, max(1.4, 0.28 * len(c.bars) + 0.7)))
    ax = fig.add_axes((0.3, 0.25, 0.65, 0.7))
    draw_bars(ax, c.bars, size=8)
    return figure_bytes(fig, "png", dpi=110)


def crop_png(crop: Any) -> bytes:
    from .io.images import png_bytes

    return png_bytes(crop)


def report_html(c: ReportContent) -> str:
    """The whole report as one HTML document."""
    signed = f'<p class="{"good" if c.signed else "bad"}">{esc(c.sign_line)}</p>'
    info = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in (
        ("Case", c.case), ("Reviewer", c.reviewer), ("Report date", c.date), ("Fields", c.fields),
        ("Models", c.models), ("Count", c.settings)))
    count_class = "good" if c.stats.remaining == 0 else "bad"
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in c.white_notes)
    chart = f'<img alt="differential bar chart" src="{png_data_uri(chart_png(c))}">' if c.bars else ""
    gallery_rows = []
    for name, crops in c.gallery:
        imgs = "".join(f'<img alt="{esc(name)} cell" src="{png_data_uri(crop_png(crop))}">' for crop in crops)
        gallery_rows.append(f"<tr><td><b>{esc(name)}</b></td><td>{imgs or 'no image available'}</td></tr>")
    more = f'<p class="note">+{c.gallery_more} more classes not shown</p>' if c.gallery_more else ""
    gallery_notes = "".join(f'<p class="bad">{esc(n)}</p>' for n in c.gallery_notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Case report: {esc(c.case)}</title>
<style>{STYLE}</style></head><body>
<h1>Blood smear case report</h1>
<dl>{info}</dl>
{signed}
<h2>White-cell differential</h2>
{table_html(c.white)}
<p class="{count_class}">{esc(c.count_line)}</p>
{notes}
{chart}
<h2>Red-cell morphology</h2>
{table_html(c.red)}
<p><b>{esc(c.red_line)}</b></p>
<p class="note">Grading: {esc(c.grading_source)}</p>
<p class="note">{esc(VALIDATE)}</p>
<h2>Model–reviewer agreement</h2>
{table_html(c.agreement)}
<p class="note">{esc(c.agreement_line)}</p>
<p class="note">Share of reviewed cells whose final class equals the model's pre-classification (exact 95%
interval).</p>
<h2>Representative cells</h2>
<table class="gallery">{''.join(gallery_rows)}</table>
{more}{gallery_notes}
<p class="note">napari-bloodcell case report. Percentages carry exact (Clopper–Pearson) 95% intervals.</p>
</body></html>
"""
