"""``bloodcell case ...`` and ``bloodcell points ...``: the case review's batch side, the same core as the Case panel.

A case is the fields of one slide in a review project: ``case new`` makes it (optionally with boxes or points
that start each field's review), ``case status``/``list`` show where it stands, ``case cell`` reviews one cell,
``case sign`` signs the finished fields and the case, ``case differential`` gives the counts and grades, and
``case report`` writes the PDF and HTML a pathologist signs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .review_verbs import _reviewer
from .verbs import json_ready, number_in

WBC_PER_NL = number_in(0.0, 1000.0, low_open=True)


def _project(args: argparse.Namespace, create: bool = False):
    from ..core.review_project import ReviewProject

    return ReviewProject(args.project, create=create)


def _sources(args: argparse.Namespace):
    """The boxes (any annotation format) or points that start the fields' reviews."""
    annotations = points = None
    if getattr(args, "annotations", None):
        from ..core.io.formats import read_annotations

        annotations = read_annotations(args.annotations)
    if getattr(args, "points", None):
        from ..core.io.points import read_points

        points = read_points(args.points, images=getattr(args, "point_images", None))
    return annotations, points


def _print_json(value) -> None:
    print(json.dumps(json_ready(value), indent=1, allow_nan=False))


def _settings_from(args: argparse.Namespace, settings):
    from ..core.cases import check_reference

    if getattr(args, "target", None):
        settings.target = args.target
    if getattr(args, "wbc", None):
        settings.wbc_per_litre = args.wbc * 1e9
    if getattr(args, "reference", None):
        from ..core.untrusted import load_json

        settings.reference = check_reference(load_json(args.reference, 1 << 20), args.reference)
    if getattr(args, "grading", None):
        from ..core.morphology import load_grading

        load_grading(args.grading)  # refuse a bad table now, not at report time
        settings.grading = str(Path(args.grading).resolve())
    return settings


# ------------------------------------------------------------------------------------------------------ verbs


def _new(args: argparse.Namespace) -> int:
    from ..core.cases import Case, CaseSettings, check_case_name, expand_images

    check_case_name(args.case)  # everything is checked before the project folder is made
    settings = _settings_from(args, CaseSettings())
    expand_images(args.fields)
    annotations, points = _sources(args)
    case = Case.create(_project(args, create=True), args.case, by=_reviewer(args.reviewer), settings=settings)
    added = case.add_images(args.fields, annotations, points, review_default=args.review_default)
    print(f"case {case.name!r}: {len(added)} field(s) in {args.project}")
    return 0


def _add(args: argparse.Namespace) -> int:
    from ..core.cases import Case

    annotations, points = _sources(args)
    case = Case.open(_project(args), args.case)
    added = case.add_images(args.fields, annotations, points, review_default=args.review_default)
    print(f"case {case.name!r}: {len(added)} field(s) added, {len(case.fields)} in all")
    return 0


def _set(args: argparse.Namespace) -> int:
    from ..core.cases import Case

    case = Case.open(_project(args), args.case)
    _settings_from(args, case.settings)
    case.save()
    _print_json(case.settings.as_dict())
    return 0


def _status(args: argparse.Namespace) -> int:
    import dataclasses

    from ..core.cases import Case

    case = Case.open(_project(args), args.case)
    loaded = case.tables()
    rows = [dataclasses.asdict(s) for s in case.status(loaded)]
    signed = case.signed if case.signature_valid(loaded) else None
    blocking = case.blocking(loaded)
    if args.json:
        _print_json({"case": case.name, "fields": rows, "signed": signed, "blocking": blocking})
        return 0
    for r in rows:
        print(f"{r['file_name']}: {r['state']}, {r['cells']} cells, {r['unreviewed']} unreviewed "
              f"({r['uncertain_left']} uncertain){', signed by ' + r['signed_by'] if r['signed_by'] else ''}")
    done = sum(r["state"] == "done" for r in rows)
    print(f"case {case.name!r}: {done} of {len(rows)} field(s) done; "
          + (f"signed by {signed['by']}" if signed else "not signed" + (f" ({blocking[0]})" if blocking else "")))
    return 0


def _list(args: argparse.Namespace) -> int:
    from ..core.cases import Case, list_cases

    project = _project(args)
    rows = []
    for name in list_cases(project):
        case = Case.open(project, name)
        loaded = case.tables()
        states = [s.state for s in case.status(loaded)]
        rows.append({"case": name, "fields": len(states), "done": states.count("done"),
                     "signed": case.signature_valid(loaded)})
    if args.json:
        _print_json(rows)
    for r in [] if args.json else rows:
        print(f"{r['case']}: {r['done']}/{r['fields']} fields done, {'signed' if r['signed'] else 'not signed'}")
    return 0


def _differential(args: argparse.Namespace) -> int:
    from ..core.cases import Case, case_statistics

    case = Case.open(_project(args), args.case)
    _settings_from(args, case.settings)  # for this answer only; 'case set' keeps them
    stats = case_statistics(case)
    if args.json:
        _print_json(stats.as_dict())
        return 0
    print(f"white cells: {stats.white_total} of {stats.target}"
          + (f" ({stats.remaining} more needed)" if stats.remaining else ""))
    for r in stats.white:
        absolute = f"  {r.per_litre / 1e9:.2f} x10^9/L" if r.per_litre is not None else ""
        flag = f"  {r.flag.upper()} (ref {r.reference[0]:g}-{r.reference[1]:g}%)" if r.flag else ""
        print(f"  {r.name}: {r.count}  {r.percent:.1f}% ({r.low:.1f}-{r.high:.1f}){absolute}{flag}")
    print(f"  not classed (smudge/other, excluded): {stats.not_classed}")
    if stats.red_total:
        print(f"red cells: {stats.red_total}")
        for g in stats.red:
            print(f"  {g.name}: {g.count}  {g.percent:.1f}% ({g.low:.1f}-{g.high:.1f})  grade {g.grade or '-'}")
    for name, n in stats.other.items():
        print(f"{name} (counted apart): {n}")
    return 0


def _queue(args: argparse.Namespace) -> int:
    from ..core.case_stats import case_queue
    from ..core.cases import Case

    case = Case.open(_project(args), args.case)
    queue = case_queue([(f.key, t) for f, t, _ in case.tables()])[: args.n]
    if args.json:
        _print_json([{"field": k, "id": i, "certainty": c} for k, i, c in queue])
    for k, i, c in [] if args.json else queue:
        print(f"{k}  cell {i}  certainty {c:.3f}")
    return 0


def _cell(args: argparse.Namespace) -> int:
    """Review one cell from a script: a class, accept, reject or not-classed, saved like a key press."""
    from ..core.cases import Case
    from ..core.errors import BloodcellInputError

    case = Case.open(_project(args), args.case)
    field = next((f for f in case.fields if f.key == args.field or f.file_name == args.field), None)
    if field is None:
        raise BloodcellInputError(f"case {case.name!r} has no field {args.field!r}")
    loaded = case.project.load(field.key)
    if loaded is None:
        raise BloodcellInputError(f"field {field.file_name} has no cells to review yet")
    table, image = loaded
    by = _reviewer(args.reviewer)
    if args.set_class:
        table.set_class(args.id, args.set_class, by)
    else:
        table.set_review(args.id, args.state, by)
    case.project.save(field.key, table, image)
    return 0


def _sign(args: argparse.Namespace) -> int:
    from ..core.cases import Case

    case = Case.open(_project(args), args.case)
    by = _reviewer(args.reviewer)
    if args.fields:
        for f, table, image in case.tables():
            if table is not None and not table.signature_valid and not len(table.blocking_signoff()):
                table.sign(by)
                case.project.save(f.key, table, image)
    signed = case.sign(by)
    print(f"case {case.name!r} signed by {signed['by']} ({len(signed['fields'])} fields)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from ..core.case_report import write_case_report
    from ..core.cases import Case

    case = Case.open(_project(args), args.case)
    pdf, html = write_case_report(case, args.out, reviewer=args.reviewer)
    print(f"report: {pdf} and {html}")
    return 0


def _points(args: argparse.Namespace) -> int:
    """Convert point files between layouts, or turn them into cells (boxes) for training and review."""
    from ..core.io.points import read_points, write_points

    pset = read_points(args.input, images=args.images)
    if args.action == "convert":
        written = write_points(pset, args.out, args.format)
        print(f"{pset.n_points} point(s) of {len(pset.images)} image(s) written to {written[0]}"
              + (f" and {len(written) - 1} more file(s)" if len(written) > 1 else ""))
        return 0
    from ..core.point_boxes import cells_from_point_set

    boxes = None
    if args.boxes:
        from ..core.io.formats import read_annotations

        boxes = read_annotations(args.boxes)
    aset, report = cells_from_point_set(pset, boxes, box_class=args.box_class)
    from ..core.io.coco import write_coco

    write_coco(aset, args.out)
    if args.json:
        _print_json(report)
    else:
        print(f"{report['cells']} cell(s) from {report['points']} point(s) in {report['images']} image(s): "
              f"{report['paired']} paired with a box, {report['grown']} grown from the cell outline, "
              f"{report['fallback']} given the median size; "
              f"{report['unpaired_boxes']} box(es) without a point")
    return 0


def register_case(sub) -> None:
    p = sub.add_parser("case", help="cases: the fields of one slide reviewed, counted, signed and reported together")
    verbs = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def base(name: str, help_text: str, fields: bool = False, case: bool = True) -> argparse.ArgumentParser:
        q = verbs.add_parser(name, help=help_text)
        if case:
            q.add_argument("case", help="case name (letters, digits, space, _ . + -)")
        q.add_argument("--project", required=True, type=Path, help="review project folder")
        if fields:
            q.add_argument("fields", nargs="+", type=Path,
                           help="field images, or folders of them")
            q.add_argument("--annotations", type=Path, help="boxes that start each new field's review (any format)")
            q.add_argument("--points", type=Path, help="point annotations that start each new field's review")
            q.add_argument("--point-images", type=Path, help="folder of the points' images when not the usual one")
            q.add_argument("--review-default", default="accepted", choices=("accepted", "unreviewed"),
                           help="state of the imported cells: accepted (drawn by people) or unreviewed (a model's)")
        return q

    def settings(q: argparse.ArgumentParser) -> None:
        q.add_argument("--target", type=int, choices=(100, 200), help="white cells to count")
        q.add_argument("--wbc", type=WBC_PER_NL, help="the analyser's WBC count, x10^9/L, for absolute counts")
        q.add_argument("--reference", type=Path, help='reference ranges JSON {"neutrophil": [40, 75], ...} (percent)')
        q.add_argument("--grading", type=Path, help="the laboratory's red-cell grading table (JSON)")

    q = base("new", "make a case from field images", fields=True)
    q.add_argument("--reviewer")
    settings(q)
    q.set_defaults(run=_new)
    base("add", "add field images to a case", fields=True).set_defaults(run=_add)
    q = base("set", "change a case's target count, WBC count, reference ranges or grading table")
    settings(q)
    q.set_defaults(run=_set)
    q = base("status", "fields, their state and counts, and the sign-off")
    q.add_argument("--json", action="store_true")
    q.set_defaults(run=_status)
    q = base("list", "the cases of a project", case=False)
    q.add_argument("--json", action="store_true")
    q.set_defaults(run=_list)
    q = base("differential", "the case's white-cell differential and red-cell grades")
    settings(q)
    q.add_argument("--json", action="store_true")
    q.set_defaults(run=_differential)
    q = base("queue", "the case's unreviewed cells, least certain first")
    q.add_argument("-n", type=int, default=20)
    q.add_argument("--json", action="store_true")
    q.set_defaults(run=_queue)
    q = base("cell", "review one cell: give its class, or accept/reject/not-classed it")
    q.add_argument("--field", required=True, help="field key or image file name")
    q.add_argument("--id", required=True, type=int, nargs="+", help="cell id(s)")
    what = q.add_mutually_exclusive_group(required=True)
    what.add_argument("--class", dest="set_class")
    what.add_argument("--state", choices=("accepted", "rejected", "not_classed"))
    q.add_argument("--reviewer")
    q.set_defaults(run=_cell)
    q = base("sign", "sign the case (every field signed, no uncertain cell left)")
    q.add_argument("--reviewer")
    q.add_argument("--fields", action="store_true", help="first sign every field with no uncertain cell left")
    q.set_defaults(run=_sign)
    q = base("report", "write the case report: a one-page PDF and its HTML twin")
    q.add_argument("--out", required=True, type=Path, help="report.pdf to create (report.html beside it)")
    q.add_argument("--reviewer")
    q.set_defaults(run=_report)


def register_points(sub) -> None:
    p = sub.add_parser("points", help="point annotations: convert layouts, or turn points into cells (boxes)")
    p.add_argument("action", choices=("convert", "cells"))
    p.add_argument("input", type=Path, help="x y type .txt (or a folder, e.g. Label/), x,y,class CSV, COCO keypoints")
    p.add_argument("--out", required=True, type=Path,
                   help="convert: .csv, .json (COCO keypoints) or a folder (x y type); cells: COCO .json of boxes")
    p.add_argument("--format", choices=("csv", "coco", "xyt"), help="convert: output layout (default: by suffix)")
    p.add_argument("--images", type=Path, help="folder of the images when not the usual one")
    p.add_argument("--boxes", type=Path, help="cells: detected boxes to pair points with (any box format)")
    p.add_argument("--box-class", default=None, help="cells: only pair with boxes of this class (e.g. RBC)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_points)


REGISTRY = (register_case, register_points)
