"""``bloodcell suggest``: which fields (or cells) to review next, ranked with the active model (issue 19)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .verbs import FRACTION, _progress, json_ready, refuse_existing_out


def load_pool(pool: Path, case: str | None = None, boxes: Path | None = None):
    """A folder of images or image files, or a review project (``--case``: one of its cases)."""
    from ..core.active.pool import folder_pool, project_pool
    from ..core.errors import BloodcellInputError
    from ..core.review_project import ReviewProject

    if (pool / "project.json").is_file():
        if boxes is not None:
            raise BloodcellInputError("--boxes is for a folder of images; a review project's cells are its own")
        return project_pool(ReviewProject(pool, create=False), case)
    if case is not None:
        raise BloodcellInputError("--case needs a review project as --pool (a folder with project.json)", pool)
    if not pool.exists():
        raise BloodcellInputError("no such folder or image", pool)
    annotations = None
    if boxes is not None:
        from ..core.io.formats import read_annotations

        annotations = read_annotations(boxes)
    return folder_pool(pool, annotations)


def _whole(low: int, high: int | None = None):
    """An argparse type for a whole number from ``low`` (to ``high``): argparse's one-line usage error otherwise."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number; got {text!r}") from None
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}; got {value}")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {low} or more; got {value}")
        return value

    return parse


def _fmt(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _run_suggest(args: argparse.Namespace) -> int:
    from ..core.active.suggest import suggest_job
    from ..core.atomic import atomic_write_text
    from ..core.progress import drain

    if args.out is not None:
        refuse_existing_out(args.out)
    pool = load_pool(args.pool, args.case, args.boxes)
    result = drain(suggest_job(pool, args.model, args.k, args.strategy, args.score, args.seed, args.device),
                   _progress("suggest", args.quiet or args.json))
    data = json_ready(result.as_json())
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(data, indent=1))
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    unit = "cells" if result.unit == "cell" else "fields"
    print(f"{len(result.items)} of {result.pool} {unit} suggested by {result.strategy} with {result.model} "
          f"({result.reviewed} reviewed field(s) as anchors, {result.seconds:.1f} s)")
    for line in result.skipped:
        print(f"  skipped {line}", file=sys.stderr)
    head = f"{'rank':>4}  {'score':>6}  {'uncert.':>7}  {'entropy':>7}  {'flip':>6}  "
    print(head + ("cells  field" if result.unit == "field" else "cell  class  field"))
    for s in result.items:
        row = f"{s.rank:>4}  {_fmt(s.score):>6}  {_fmt(s.uncertainty):>7}  {_fmt(s.entropy):>7}  " \
              f"{_fmt(s.disagreement):>6}  "
        row += f"{s.cells if s.cells >= 0 else '-':>5}  {s.name}" if result.unit == "field" else \
            f"{s.cell_id:>4}  {s.label}  {s.name}"
        print(row)
    if args.out is not None:
        print(f"wrote {args.out}")
    return 0


def register_suggest(sub) -> None:
    from ..core.active.acquisition import DEFAULT_STRATEGY, STRATEGIES

    p = sub.add_parser(
        "suggest", help="rank the unreviewed fields (or cells) whose review would teach the model most",
        description="Score a pool of unreviewed fields with the active model and list the k to review next. "
                    "Strategies: combined (uncertain and unlike what was reviewed; the default, see "
                    "docs/benchmarks.md 'Active learning'), uncertainty (least sure: entropy of the boxes' "
                    "scores plus disagreement with the mirrored field), diversity (k-centre greedy on the "
                    "model's embeddings), random (the baseline). A detector ranks fields; a classifier ranks "
                    "the pool's unreviewed cells.")
    p.add_argument("--pool", type=Path, required=True,
                   help="a folder of images, or a review project (its fields not yet done; done fields anchor "
                        "diversity)")
    p.add_argument("--case", help="with a review project: only this case's fields")
    p.add_argument("--model", default="auto",
                   help="detector: auto (the active one, else the bundled one), bundled, classical or a "
                        "checkpoint; or a classifier checkpoint (ranks cells)")
    p.add_argument("-k", type=_whole(1, 10_000), default=10, help="how many to suggest (default 10)")
    p.add_argument("--strategy", choices=STRATEGIES, default=DEFAULT_STRATEGY)
    p.add_argument("--boxes", type=Path, help="cells of a folder pool for a classifier (any annotation format)")
    p.add_argument("--score", type=FRACTION, default=0.3,
                   help="detection threshold for counting cells and comparing with the mirror image (default 0.3, "
                        "as bloodcell detect)")
    p.add_argument("--seed", type=_whole(0), default=0, help="random strategy's seed (0 or more)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print the suggestions as JSON")
    p.add_argument("--out", type=Path, help="also write them as JSON to this new file")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_run_suggest)


REGISTRY = (register_suggest,)
