"""The Review widget's Suggest tab: which fields of the open case to review next (issue 19).

The pool is the open case's fields not yet done (a folder joins a case with the Case tab's *Add folder…*); its
done fields anchor diversity. The active model scores them in a napari worker (progress, Cancel) by the strategy
chosen (:mod:`...core.active.acquisition`), the list shows the top k with their scores, and *Open next* opens
them in that order through the Case tab, so each is reviewed exactly as any other field. A classifier ranks the
unreviewed cells instead, and *Open next* goes to the field at that cell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...core.active.acquisition import DEFAULT_STRATEGY, STRATEGIES
from ...core.progress import Progress
from .case_count import compact_table
from .compact import button_grid, narrow_combo
from .jobs import CHECKPOINT, JobFailed, _reporting_errors, registry_choices

if TYPE_CHECKING:
    from ...core.active.suggest import Suggestions
    from .review import ReviewWidget

STRATEGY_TIPS = {
    "combined": "uncertain fields unlike those reviewed",
    "uncertainty": "the fields the model is least sure of",
    "diversity": "fields unlike each other and unlike those reviewed",
    "random": "a random draw (the baseline)",
}


def _number(value: float) -> str:
    return "–" if value != value else f"{value:.2f}"  # NaN: the random strategy scores nothing


class SuggestPanel(QWidget):
    """Rank the open case's unreviewed fields with a model and open them in that order."""

    def __init__(self, review: ReviewWidget) -> None:
        super().__init__()
        self.review = review
        self.worker: Any = None
        self.result: Suggestions | None = None
        self.result_case: str | None = None
        """The case the suggestions rank: opening one in another case is refused."""
        self._for_case: str | None = None
        self._got_result = False
        self.next_index = 0
        self.model_combo = narrow_combo(QComboBox(), 12)
        self.model_combo.setToolTip("the model that scores the fields: a detector ranks fields, a classifier "
                                    "ranks cells")
        self.model_combo.currentIndexChanged.connect(self._model_changed)
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("detector or classifier checkpoint (.pt)")
        self.browse = QPushButton("…")
        self.browse.clicked.connect(self._browse)
        self.strategy_combo = narrow_combo(QComboBox(), 10)
        for name in STRATEGIES:
            self.strategy_combo.addItem(name)
            self.strategy_combo.setItemData(self.strategy_combo.count() - 1, STRATEGY_TIPS[name], 3)  # tooltip
        self.strategy_combo.setCurrentText(DEFAULT_STRATEGY)
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 500)
        self.k_spin.setValue(10)
        self.file_row = QWidget()
        row = QHBoxLayout(self.file_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.checkpoint_edit, 1)
        row.addWidget(self.browse)
        form = self.form = QFormLayout()
        form.addRow("model", self.model_combo)
        form.addRow("file", self.file_row)
        form.addRow("strategy", self.strategy_combo)
        form.addRow("how many", self.k_spin)
        self.buttons: dict[str, QPushButton] = {}
        for text, slot, tip in [("Suggest", self.suggest, "score the open case's unreviewed fields and list the "
                                                           "ones to review next"),
                                ("Cancel", self.cancel, "stop scoring"),
                                ("Open next", self.open_next, "open the next suggested field (in the Case tab)")]:
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(lambda _=False, s=slot: s())
            self.buttons[text] = button
        self.progress = QProgressBar()
        self.progress.hide()
        self.table = compact_table(["field", "score", "uncert.", "cells"],
                                   ["the field (or, with a classifier, the cell) to review",
                                    "what the strategy ranked by, 0..1", "the model's uncertainty, 0..1: entropy "
                                    "of its scores and disagreement with the mirrored field",
                                    "cells the model finds (a classifier: the cell's id)"])
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setMinimumHeight(140)
        self.table.cellClicked.connect(lambda row, _col: self.open_suggestion(row))
        self.status = QLabel("Open a case (Case tab), then Suggest ranks its fields not yet done.")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addLayout(button_grid([self.buttons[t] for t in ("Suggest", "Cancel", "Open next")], 3))
        layout.addWidget(self.progress)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)
        self.refresh_models()
        self._enable()

    # -- model ---------------------------------------------------------------------------------------------------
    def refresh_models(self) -> None:
        """The active or bundled detector, the classical one, the registry's active classifier, recent files."""
        current = self.model_combo.currentData()
        choices = registry_choices("detector", (("active or bundled detector", "auto"),
                                                ("classical detector", "classical")))
        extra = [c for c in registry_choices("classifier") if c[1] != CHECKPOINT]
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for text, value in choices[:-1] + extra + choices[-1:]:
            self.model_combo.addItem(text, value)
        index = self.model_combo.findData(current) if current is not None else 0
        self.model_combo.setCurrentIndex(max(index, 0))
        self.model_combo.blockSignals(False)
        self._model_changed()

    def showEvent(self, event: Any) -> None:  # noqa: N802  (Qt's name)
        """The model list is read again each time the tab is shown: a retrain may have promoted a new model."""
        if self.worker is None:
            self.refresh_models()
        super().showEvent(event)

    def _model_changed(self, *_: Any) -> None:
        wants_file = self.model_combo.currentData() == CHECKPOINT
        self.file_row.setVisible(wants_file)
        label = self.form.labelForField(self.file_row)
        if label is not None:
            label.setVisible(wants_file)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model checkpoint", "", "Checkpoints (*.pt)")
        if path:
            self.checkpoint_edit.setText(path)

    def model(self) -> str:
        value = self.model_combo.currentData()
        return self.checkpoint_edit.text().strip() if value == CHECKPOINT else str(value)

    # -- suggesting ----------------------------------------------------------------------------------------------
    def pool(self):
        """The open case's fields as a pool (the tables the Case tab holds, the live one included)."""
        from ...core.active.pool import entries_pool
        from ...core.errors import BloodcellInputError

        data = self.review.case_panel.data
        if data is None:
            raise BloodcellInputError("no case is open: open one in the Case tab (add a folder to it to rank an "
                                      "archive's images)")
        entries = [(f.key, f.file_name, (f.path, (image or {}).get("path")), f.digest, table)
                   for f, table, image in data.loaded()]
        return entries_pool(entries, data.case.project, f"case {data.case.name}")

    def suggest(self) -> None:
        from napari.qt.threading import thread_worker

        from ...core.active.suggest import suggest_job
        from ...core.errors import BloodcellInputError

        from .review_detect import REVIEW_SCORE

        if self.worker is not None:
            return
        model = self.model()
        if not model:
            self.status.setText("choose a checkpoint file first")
            return
        try:
            pool = self.pool()
        except BloodcellInputError as exc:
            self.status.setText(str(exc))
            return
        if not pool.fields:
            self.status.setText("every field of the case is done: nothing to suggest")
            return
        job = suggest_job(pool, model, self.k_spin.value(), self.strategy_combo.currentText(),
                          score=REVIEW_SCORE, device="auto")
        self._for_case = self.review.case_panel.data.case.name
        worker = thread_worker(_reporting_errors, ignore_errors=True, start_thread=False)(job)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_result)
        worker.errored.connect(lambda exc: self.status.setText(f"failed: {type(exc).__name__}: {exc}"))
        worker.finished.connect(self._on_finished)
        self.worker, self._got_result = worker, False
        self.progress.setRange(0, max(len(pool.fields), 1))
        self.progress.setValue(0)
        self.progress.show()
        self.status.setText(f"scoring {len(pool.fields)} field(s) not yet done…")
        self._enable()
        worker.start()

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()
            self.status.setText("cancelling…")

    def _on_progress(self, item: Progress) -> None:
        if item.total:
            self.progress.setRange(0, item.total)
            self.progress.setValue(item.step)

    def _on_result(self, result: Any) -> None:
        self._got_result = True  # a Cancel pressed after the last field changes nothing then
        if isinstance(result, JobFailed):
            self.status.setText(result.message)
            return
        data = self.review.case_panel.data
        if data is None or data.case.name != self._for_case:
            self.status.setText("the case changed while its fields were scored; Suggest again")
            return
        self.show_result(result, self._for_case)

    def _on_finished(self) -> None:
        if self.worker is not None and self.worker.abort_requested and not self._got_result:
            self.status.setText("cancelled; the previous suggestions are kept")
        self.worker = None
        self.progress.hide()
        self._enable()

    def show_result(self, result: Suggestions, case: str | None = None) -> None:
        self.result, self.next_index, self.result_case = result, 0, case
        self.table.setRowCount(0)
        for s in result.items:
            row = self.table.rowCount()
            self.table.insertRow(row)
            cells = str(s.cell_id) if result.unit == "cell" else ("–" if s.cells < 0 else str(s.cells))
            name = f"{s.name} · {s.label}" if result.unit == "cell" else s.name
            for col, text in enumerate((name, _number(s.score), _number(s.uncertainty), cells)):
                item = QTableWidgetItem(text)
                item.setToolTip(f"{s.path}\nentropy {_number(s.entropy)}, disagreement with the mirrored field "
                                f"{_number(s.disagreement)}")
                self.table.setItem(row, col, item)
        unit = "cell(s)" if result.unit == "cell" else "field(s)"
        skipped = f"; {len(result.skipped)} skipped: {result.skipped[0]}" if result.skipped else ""
        self.status.setText(f"{len(result.items)} of {result.pool} {unit} by {result.strategy} "
                            f"({result.seconds:.1f} s); Open next opens them in this order{skipped}")
        self._enable()

    # -- opening -------------------------------------------------------------------------------------------------
    def open_next(self) -> None:
        if self.result is None or self.next_index >= len(self.result.items):
            self.status.setText("no suggestion left: Suggest again after retraining")
            return
        self.open_suggestion(self.next_index)

    def open_suggestion(self, row: int) -> None:
        """Open suggestion ``row`` in the Case tab (at its cell for a classifier's suggestion)."""
        if self.result is None or not 0 <= row < len(self.result.items):
            return
        s = self.result.items[row]
        panel = self.review.case_panel
        self.next_index = max(self.next_index, row + 1)  # a field gone from the case is passed over, not retried
        same_case = panel.data is not None and self.result_case in (None, panel.data.case.name)
        k = panel.data.index(s.key) if same_case else -1
        if k < 0:
            self.status.setText(f"{s.name} is not a field of the open case (suggested for case "
                                f"{self.result_case}); Suggest again")
            self._enable()
            return
        self.table.selectRow(row)
        panel.open_field(k, cell=s.cell_id)
        self.status.setText(f"suggestion {row + 1} of {len(self.result.items)}: {s.name}")
        self._enable()

    def _enable(self) -> None:
        running = self.worker is not None
        self.buttons["Suggest"].setEnabled(not running)
        self.buttons["Cancel"].setEnabled(running)
        left = self.result is not None and self.next_index < len(self.result.items)
        self.buttons["Open next"].setEnabled(left and not running)
