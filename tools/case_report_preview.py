"""Render docs/images/case_report.png: the case report of a demo case of real BCCD fields.

Needs ../shared/data/bccd and ../shared/data/wbc_types (see the data README). The fields' VOC boxes play the
model's output: white cells take their type from wbc_types/labels.csv (fields with one white cell only), and the
model's scores, a few wrong pre-classifications (then corrected by the "reviewer"), two smudges and a share of
red cells typed as spherocytes and target cells are SIMULATED (seeded), since BCCD records none of them.

    python tools/case_report_preview.py [--fields 100] [--out docs/images/case_report.png] [--pdf /tmp/r.pdf]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from napari_bloodcell.core.annotations import AnnotationTable
from napari_bloodcell.core.case_report import render_preview_png, write_case_report
from napari_bloodcell.core.cases import Case, CaseSettings
from napari_bloodcell.core.review_project import ReviewProject

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CLASSES = ["neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil", "RBC", "spherocyte", "target cell",
           "platelet"]


def voc_boxes(path: Path) -> list[tuple[str, list[float]]]:
    out = []
    for obj in ET.parse(path).getroot().iter("object"):
        b = obj.find("bndbox")
        box = [float(b.find(k).text) - 1 for k in ("xmin", "ymin", "xmax", "ymax")]
        if box[2] > box[0] and box[3] > box[1]:
            out.append((obj.find("name").text.strip(), box))
    return out


def build(folder: Path, n_fields: int) -> Case:
    rng = np.random.default_rng(7)
    with open(DATA / "wbc_types" / "labels.csv", newline="") as fh:
        types = {r["image"]: r["category"].lower() for r in csv.DictReader(fh) if "," not in r["category"]}
    images = DATA / "bccd" / "JPEGImages"
    chosen = []
    for name in sorted(types):
        objs = voc_boxes(DATA / "bccd" / "Annotations" / f"{Path(name).stem}.xml") if (images / name).is_file() \
            else []
        if sum(n == "WBC" for n, _ in objs) == 1:
            chosen.append((images / name, types[name], objs))
        if len(chosen) == n_fields:
            break
    project = ReviewProject(folder / "project")
    case = Case.create(project, "Smear 2024-0113", by="demo",
                       settings=CaseSettings(target=100, wbc_per_litre=7.4e9))
    case.add_images([p for p, _, _ in chosen])
    smudges = set(rng.choice(len(chosen), 2, replace=False).tolist())
    for k, (field, (_, wbc, objs)) in enumerate(zip(case.fields, chosen, strict=True)):
        truth = [wbc if n == "WBC" else "platelet" if n.startswith("Platelet") else "RBC" for n, _ in objs]
        truth = [("spherocyte" if u < 0.08 else "target cell" if u < 0.11 else c) if c == "RBC" else c
                 for c, u in zip(truth, rng.random(len(truth)), strict=True)]
        model = [c if rng.random() > 0.08 else str(rng.choice([x for x in CLASSES[:5] if x != c]))
                 if c in CLASSES[:5] else c for c in truth]
        t = AnnotationTable(CLASSES)
        ids = t.add([b for _, b in objs], model, "bccd-demo-yolo v3", scores=rng.uniform(0.62, 0.99, len(objs)),
                    review="unreviewed")
        for i, c in zip(ids, truth, strict=True):
            t.set_class([i], c, "Dr A. Smith")
        if k in smudges:
            t.set_review([ids[truth.index(wbc)]], "not_classed", "Dr A. Smith")
        t.sign("Dr A. Smith")
        project.save(field.key, t, {"file_name": field.file_name, "width": 640, "height": 480,
                                    "digest": field.digest, "path": field.path})
    case.sign("Dr A. Smith")
    return case


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=int, default=110)
    ap.add_argument("--out", type=Path, default=Path("docs/images/case_report.png"))
    ap.add_argument("--pdf", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        case = build(Path(tmp), args.fields)
        if args.pdf:
            print(*write_case_report(case, args.pdf, exist="backup"))
        print(render_preview_png(case, args.out, exist="replace", dpi=110))


if __name__ == "__main__":
    main()
