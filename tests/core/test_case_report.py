"""The case report: one PDF page and an HTML twin holding the case's numbers, escaped names, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_bloodcell.core.annotations import AnnotationTable
from napari_bloodcell.core.case_report import render_preview_png, write_case_report
from napari_bloodcell.core.cases import Case, case_statistics
from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.io.images import png_bytes
from napari_bloodcell.core.review_project import ReviewProject

pypdf = pytest.importorskip("pypdf")
CLASSES = ["neutrophil", "lymphocyte", "RBC", "spherocyte"]


def _images(folder: Path, n: int = 2) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(n):
        (folder / f"field {k}.png").write_bytes(png_bytes(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)))


def _boxes(n: int, start: int = 0) -> np.ndarray:
    x = (np.arange(n) + start) % 12 * 12.0
    y = (np.arange(n) + start) // 12 * 20.0 % 100
    return np.stack([x, y, x + 10, y + 16], 1)


def build_case(tmp_path: Path, white: list[str] | None = None) -> tuple[ReviewProject, Case]:
    """Two fields. Model: 9 neutrophils (7 accepted, 1 -> lymphocyte, 1 not classed), 3 lymphocytes (2 accepted,
    1 -> neutrophil), 20 RBC and 5 spherocytes accepted: 8 neutrophils and 3 lymphocytes counted, 25 red cells."""
    classes = (white or CLASSES[:2]) + CLASSES[2:]
    _images(tmp_path / "imgs")
    p = ReviewProject(tmp_path / "proj")
    c = Case.create(p, "case 1", by="me")
    c.add_images([tmp_path / "imgs"])
    plan = [(classes[0], 5), (classes[1], 3), ("RBC", 10), ("spherocyte", 5)], [(classes[0], 4), ("RBC", 10)]
    for f, cells in zip(c.fields, plan, strict=True):
        t = AnnotationTable(classes)
        labels = [name for name, n in cells for _ in range(n)]
        ids = t.add(_boxes(len(labels)), labels, "model-1", scores=np.linspace(0.95, 0.7, len(labels)),
                    review="unreviewed")
        t.set_review(ids, "accepted", "me")
        if f is c.fields[0]:
            t.set_class([ids[0]], classes[1], "me")  # a neutrophil corrected to lymphocyte
            t.set_class([ids[5]], classes[0], "me")  # a lymphocyte corrected to neutrophil
        else:
            t.set_review([ids[0]], "not_classed", "me")  # a smudge
        p.save(f.key, t, {"file_name": f.file_name, "width": 160, "height": 120, "digest": f.digest,
                          "path": f.path})
    return p, c


def pdf_text(path: Path) -> tuple[int, str]:
    reader = pypdf.PdfReader(path)
    return len(reader.pages), " ".join(reader.pages[0].extract_text().split())


def test_report_holds_the_case_numbers(tmp_path):
    _, case = build_case(tmp_path)
    stats = case_statistics(case)
    assert stats.white_total == 11 and stats.not_classed == 1 and stats.red_total == 25
    pdf, html = write_case_report(case, tmp_path / "report.pdf", reviewer="Dr Who")
    assert html == tmp_path / "report.html"
    pages, text = pdf_text(pdf)
    page = html.read_text(encoding="utf-8")
    assert pages == 1
    expected = ["case 1", "Dr Who", "model-1", "11 of 100 white cells: 89 more needed",
                "72.7", "27.3",  # 8 and 3 of 11
                "20.0", "1+ (few)",  # 5 spherocytes of 25 red cells: grade 1+ under the ICSH default
                "Not classed (smudge/artefact): 1", "NOT SIGNED", "must validate"]
    agree = stats.agreement_total
    expected.append(f"{agree.percent:.1f}")
    n = next(a for a in stats.agreement if a.name == "neutrophil")
    assert (n.reviewed, n.agreed) == (9, 7)
    expected += ["77.8", f"{n.low:.1f}–{n.high:.1f}"]
    for s in expected:
        assert s in text, s
        assert s in page, s
    assert "Signed by" not in text
    assert "<img" in page and "data:image/png;base64," in page and "http" not in page.lower()


def test_signed_case_says_so(tmp_path):
    p, case = build_case(tmp_path)
    for f in case.fields:
        table, image = p.load(f.key)
        table.sign("Dr Who")
        p.save(f.key, table, image)
    case.sign("Dr Who")
    pdf, html = write_case_report(case, tmp_path / "r.pdf")
    text = pdf_text(pdf)[1]
    assert "Signed by Dr Who" in text and "NOT SIGNED" not in text
    assert "Signed by Dr Who" in html.read_text(encoding="utf-8")


def test_hostile_class_names_are_escaped(tmp_path):
    _, case = build_case(tmp_path, white=["<script>alert(1)</script>", "$x^2$ & co"])
    pdf, html = write_case_report(case, tmp_path / "r.pdf")
    page = html.read_text(encoding="utf-8")
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "$x^2$ &amp; co" in page
    text = pdf_text(pdf)[1]
    assert "<script>alert(1)" in text and "$x^2$ & co" in text  # printed as text, not typeset


def test_refuses_to_overwrite(tmp_path):
    _, case = build_case(tmp_path)
    out = tmp_path / "r.pdf"
    write_case_report(case, out)
    before = out.read_bytes()
    with pytest.raises(BloodcellInputError, match="refusing"):
        write_case_report(case, out)
    assert out.read_bytes() == before
    (tmp_path / "other.html").write_text("mine")
    with pytest.raises(BloodcellInputError, match="other.html"):
        write_case_report(case, tmp_path / "other.pdf")
    assert not (tmp_path / "other.pdf").exists() and (tmp_path / "other.html").read_text() == "mine"
    with pytest.raises(BloodcellInputError, match=".pdf"):
        write_case_report(case, tmp_path / "r.txt")
    write_case_report(case, out, exist="backup")
    assert list(tmp_path.glob("r.pdf.*.bak"))


def test_missing_image_still_reports(tmp_path):
    _, case = build_case(tmp_path)
    Path(case.fields[1].path).unlink()
    Path(case.fields[0].path).write_bytes(b"not an image any more")
    pdf, html = write_case_report(case, tmp_path / "r.pdf")
    pages, text = pdf_text(pdf)
    assert pages == 1 and "72.7" in text
    assert "field 1.png (missing)" in text and "field 0.png (image file changed since review)" in text
    assert "field 1.png (missing)" in html.read_text(encoding="utf-8")


def test_preview_png(tmp_path):
    _, case = build_case(tmp_path)
    out = render_preview_png(case, tmp_path / "r.png", dpi=40)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(BloodcellInputError):
        render_preview_png(case, out)


def test_many_classes_fit_one_page(tmp_path):
    _images(tmp_path / "imgs", 1)
    p = ReviewProject(tmp_path / "proj")
    empty = Case.create(p, "empty")
    pages, text = pdf_text(write_case_report(empty, tmp_path / "empty.pdf")[0])
    assert pages == 1 and "NOT SIGNED: the case has no fields" in text
    case = Case.create(p, "many")
    case.add_images([tmp_path / "imgs"])
    names = [f"type {k:02d} with a very long name indeed" for k in range(14)]
    t = AnnotationTable(names)
    t.add(_boxes(28), [n for n in names for _ in range(2)], "model-1", scores=np.full(28, 0.9), review="accepted")
    f = case.fields[0]
    p.save(f.key, t, {"file_name": f.file_name, "width": 160, "height": 120, "digest": f.digest, "path": f.path})
    pdf, html = write_case_report(case, tmp_path / "many.pdf")
    pages, text = pdf_text(pdf)
    assert pages == 1 and "+4 more" in text and "+4 more classes not shown" in text
    assert "type 13 with a very long name indeed" in html.read_text(encoding="utf-8")
