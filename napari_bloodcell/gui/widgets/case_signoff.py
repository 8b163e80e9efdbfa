"""Signing a case and writing its report, for the Case tab (a mix-in of :class:`~.case_panel.CasePanel`, which
provides ``data``, ``review``, ``buttons``, ``sign_label``, ``status`` and ``_background``).

The Sign button is enabled only while ``Case.blocking`` is empty, and otherwise shows the first reasons. Signing
and the report read every field's sidecar, so both run in a worker after the open field's autosave is written.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog

from ...core.errors import BloodcellInputError


class CaseSignOff:
    """Sign-off state, the Sign case action and the Report… action."""

    def _update_sign(self) -> None:
        data = self.data
        if data is None:
            return self._enable()
        loaded = data.loaded()
        reasons = data.case.blocking(loaded)
        self._enable(can_sign=not reasons)
        signed = data.case.signed
        if signed and data.case.signature_valid(loaded):
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(signed["at"]))
            self.sign_label.setText(f"<b>Case signed</b> by {signed['by']} on {when}.")
        elif reasons:
            more = f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else ""
            voided = "Signature voided by a later change. " if signed else ""
            self.sign_label.setText(f"{voided}Not ready to sign: " + "; ".join(reasons[:3]) + more)
        else:
            self.sign_label.setText("Every field is done: the case can be signed.")

    def _enable(self, can_sign: bool = False) -> None:
        is_open = self.data is not None
        self.buttons["Sign case"].setEnabled(is_open and can_sign)
        self.buttons["Report…"].setEnabled(is_open)
        for text in ("Add images…", "Add folder…"):
            self.buttons[text].setEnabled(is_open or bool(self.case_combo.currentText()))

    def sign_case(self) -> None:
        """Sign in the background: the case's sign-off reads every field's sidecar, so the live one is written
        first."""
        data = self.data
        if data is None:
            raise BloodcellInputError("open a case first")
        by, saver = self.review.reviewer(), self._saver()

        def sign() -> dict[str, Any]:
            if saver is not None:
                saver.flush()
            self.review.flush_closed()
            return data.case.sign(by)

        self._background(lambda _: (self._update_sign(), self.status.setText(f"case {data.case.name} signed by "
                                                                             f"{by}")), sign)

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
