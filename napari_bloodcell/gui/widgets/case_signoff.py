"""Signing a case and writing its report, for the Case tab (a mix-in of :class:`~.case_panel.CasePanel`, which
provides ``data``, ``review``, ``buttons``, ``sign_label``, ``status`` and ``_background``).

The Sign button is enabled only while ``Case.blocking`` is empty, and otherwise shows the first reasons. Signing
and the report read every field's sidecar, so both run in a worker after the open field's autosave is written.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog, QMessageBox

from ...core.cases import field_status
from ...core.errors import BloodcellInputError


class CaseSignOff:
    """Sign-off state, the Sign case action and the Report… action."""

    def _update_sign(self) -> None:
        data = self.data
        if data is None:
            return self._enable()
        loaded = data.loaded()
        reasons = data.case.blocking(loaded)
        unsigned = self._unsigned()
        only_unsigned = bool(reasons) and len(reasons) == len(unsigned)
        self._enable(can_sign=not reasons or only_unsigned)
        signed = data.case.signed
        if signed and data.case.signature_valid(loaded):
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(signed["at"]))
            self.sign_label.setText(f"<b>Case signed</b> by {signed['by']} on {when}.")
        elif only_unsigned:
            voided = "Signature voided by a later change. " if signed else ""
            self.sign_label.setText(f"{voided}No uncertain cell is left; {len(unsigned)} field(s) are not signed "
                                    "yet: Sign case signs them in your name, then the case.")
        elif reasons:
            more = f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else ""
            voided = "Signature voided by a later change. " if signed else ""
            self.sign_label.setText(f"{voided}Not ready to sign: " + "; ".join(reasons[:3]) + more)
        else:
            self.sign_label.setText("Every field is done: the case can be signed.")

    def _unsigned(self) -> list[str]:
        """Keys of the fields whose only blocker is the missing signature: reviewed up to no uncertain cell, not
        signed (the fields ``bloodcell case sign --fields`` signs)."""
        data = self.data
        return [f.key for f in data.fields if (t := data.tables.get(f.key)) is not None and not t.signature_valid
                and not len(t.blocking_signoff())] if data is not None else []

    def _enable(self, can_sign: bool = False) -> None:
        is_open = self.data is not None
        self.buttons["Sign case"].setEnabled(is_open and can_sign)
        self.buttons["Report…"].setEnabled(is_open)
        for text in ("Add images…", "Add folder…"):
            self.buttons[text].setEnabled(is_open or bool(self.case_combo.currentText()))

    def _confirm(self, question: str) -> bool:
        """Asked once before fields are signed in the reviewer's name (tests replace it)."""
        answer = QMessageBox.question(self, "Sign case", question, QMessageBox.Yes | QMessageBox.No,
                                      QMessageBox.No)
        return answer == QMessageBox.Yes

    def sign_case(self) -> None:
        """Sign in the background: the case's sign-off reads every field's sidecar, so the live one is written
        first. Fields left unsigned with no uncertain cell are signed first, in the reviewer's name, after one
        confirmation (the twin of ``bloodcell case sign --fields``)."""
        data = self.data
        if data is None:
            raise BloodcellInputError("open a case first")
        by, saver = self.review.reviewer(), self._saver()
        unsigned = self._unsigned()
        if unsigned and len(unsigned) != len(data.case.blocking(data.loaded())):
            raise BloodcellInputError("the case still has uncertain cells or fields not reviewed")
        if unsigned and not self._confirm(f"{len(unsigned)} field(s) have no uncertain cell left but are not "
                                          f"signed. Sign them as {by}, then the case?"):
            return
        saves = []
        for key in unsigned:  # on the main thread: the open field's listeners redraw and autosave it
            data.tables[key].sign(by)
            if key != self.live:
                saves.append((key, data.tables[key], data.images.get(key)))

        def sign() -> dict[str, Any]:
            if saver is not None:
                saver.flush()
            self.review.flush_closed()
            for key, table, image in saves:  # a field detected in this session has its image only in its sidecar
                data.case.project.save(key, table, image or (data.case.project.load(key) or (None, None))[1])
            return data.case.sign(by)

        def signed(_: Any) -> None:
            for k, f in enumerate(data.fields):
                self._show_row(k, field_status(f, data.tables.get(f.key)))
            self._update_sign()
            self.status.setText(f"case {data.case.name} signed by {by}"
                                + (f" ({len(unsigned)} field(s) signed with it)" if unsigned else ""))

        self._background(signed, sign)

    def report(self, out: str | Path | None = None) -> None:
        """Write the case report (PDF with an HTML twin) in the background and say where it went."""
        data = self.data
        if data is None:
            raise BloodcellInputError("open a case first")
        by, saver, exist = self.review.reviewer(), self._saver(), "refuse"
        if out is None:
            suggested = str(data.case.project.folder / "reports" / f"{data.case.name}.pdf")
            out, _ = QFileDialog.getSaveFileName(self, "Case report", suggested, "PDF (*.pdf)")
            if not out:
                return
            exist = "replace"  # the dialog asked before choosing an existing file
        out = Path(out)

        def write() -> tuple[Path, Path]:
            if saver is not None:
                saver.flush()
            self.review.flush_closed()
            out.parent.mkdir(parents=True, exist_ok=True)
            from ...core.case_report import write_case_report  # heavy (matplotlib): imported in the worker

            return write_case_report(data.case, out, reviewer=by, exist=exist)

        def written(paths: tuple[Path, Path]) -> None:
            from napari.utils.notifications import show_info

            pdf, html = paths
            self.last_report = pdf
            self.status.setText(f"Report written to {pdf} (and {html.name} beside it)")
            show_info(f"case report written to {pdf}")

        self.status.setText("writing the case report…")
        self._background(written, write)

    def _saver(self) -> Any:
        s = self.review.session
        return s.saver if s is not None and self.live is not None else None
