"""The review sidecar's reading at whole-slide scale: a fast nesting check before parsing, and the split of a
field's cells into the region under review and the rest (see :mod:`.review_project`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .annotations import AnnotationTable, Rows
from .errors import BloodcellInputError
from .untrusted import MAX_JSON_DEPTH, one_line, read_text


def load_sidecar(path: Path) -> Any:
    """A sidecar's JSON, checked as :func:`.untrusted.load_json` checks it (size, nesting, no NaN), with the
    nesting counted by numpy: the character loop there took 2.5 s of a 100,000-cell sidecar's open."""
    text = read_text(path)
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise BloodcellInputError(f"malformed JSON: nested {depth} levels deep (at most {MAX_JSON_DEPTH} allowed)",
                                  path)
    try:
        return json.loads(text, parse_constant=refuse_constant)
    except json.JSONDecodeError as exc:
        raise BloodcellInputError(f"malformed JSON: {exc}", path) from None
    except (ValueError, RecursionError) as exc:
        raise BloodcellInputError(f"malformed JSON: {one_line(exc)}", path) from None


def refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def json_depth(text: str) -> int:
    """How deep brackets nest outside strings (escaped quotes honoured), without parsing. Only the positions of
    quotes and brackets are worked on (a sidecar of 100,000 cells is 15 MB of text but 2 MB of those)."""
    data = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    quotes = np.flatnonzero(data == ord('"'))
    slashes = np.flatnonzero(data == ord("\\"))
    if len(slashes) and len(quotes):  # a quote after an odd run of backslashes is escaped
        before = quotes - 1
        run = np.zeros(len(quotes), dtype=np.int64)
        live = np.isin(before, slashes)
        while live.any():
            run += live
            before = before - 1
            live &= np.isin(before, slashes)
        quotes = quotes[run % 2 == 0]
    opening = np.flatnonzero((data == ord("[")) | (data == ord("{")))
    closing = np.flatnonzero((data == ord("]")) | (data == ord("}")))
    brackets = np.concatenate([opening, closing])
    steps = np.concatenate([np.ones(len(opening), np.int64), -np.ones(len(closing), np.int64)])
    order = np.argsort(brackets, kind="stable")
    brackets, steps = brackets[order], steps[order]
    outside = np.searchsorted(quotes, brackets) % 2 == 0  # an even number of quotes before it
    return int(np.cumsum(steps[outside]).max(initial=0))


def split_region(table: AnnotationTable, region: tuple[int, int, int, int]) -> tuple[AnnotationTable, Rows]:
    """The cells whose box centre lies in ``region`` (y0, y1, x0, x1 pixels) as a table of their own, and the rest.

    The region's table keeps the field's ``next_id`` (cells drawn in it get ids no cell outside has), revision and
    sign-off; write both back with ``Autosaver(..., outside=rest)``."""
    y0, y1, x0, x1 = region
    b = table.col("box")
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    inside = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
    part = AnnotationTable(table.classes, table.rows.take(np.flatnonzero(inside)), next_id=table.next_id)
    part.revision, part.signed = table.revision, table.signed
    return part, table.rows.take(np.flatnonzero(~inside))
