"""What the background-job widgets (Detect cells, Classify cells, Segment volume) share: errors as values, devices,
Cancel, a run button that says why it cannot run yet, and a layout that fits a laptop screen."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ...core.progress import Progress

from napari_bloodcell.core.errors import BloodcellInputError


@dataclasses.dataclass
class JobFailed:
    """What a job returns instead of raising a bad-input error (superqt would re-raise it into Qt's loop)."""

    message: str


def _reporting_errors(job):
    """Run a core job; a bad-input error comes back as :class:`JobFailed` and is shown in the widget."""
    try:
        return (yield from job)
    except BloodcellInputError as exc:
        return JobFailed(str(exc))


def _devices() -> list[str]:
    import torch
    import torchvision.ops  # noqa: F401  # first import on the main thread: importing it in a worker can crash

    return ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


CHECKPOINT = "checkpoint file…"

NARROW = 280
"""Minimum width (px) of a job widget's content: docked beside napari's layer list (about 290 px), the canvas keeps
more than 55% of a 1366-pixel-wide screen."""


def checkpoint_problem(model: str, checkpoint: Any, task: str) -> str | None:
    """Why a model picker cannot run yet (no model, a file that is not there), or None when it can."""
    if model != CHECKPOINT:
        return None
    text = str(checkpoint or "").strip()
    if text in ("", "."):
        return f"no {task}"
    if not Path(text).expanduser().is_file():
        return f"no such file: {text}"
    return None


def registry_choices(task: str, first: tuple[tuple[str, str], ...] = ()) -> list[tuple[str, str]]:
    """A model picker's entries: ``first``, the registry's active model of ``task`` (what retraining last
    promoted), recently used files of that kind, and a file chooser."""
    from napari_bloodcell.core.models.recent import recent_models
    from napari_bloodcell.core.models.registry import ModelRegistry

    choices = list(first)
    active = ModelRegistry().active_file(task)
    if active is not None:
        entry, path = active
        arch = f" ({entry['arch']})" if entry.get("arch") else ""
        choices.append((f"active {task} {entry['id']}{arch}", str(path)))
    choices += [(p, p) for p in recent_models(task) if p not in {c[1] for c in choices}]
    return [*choices, (CHECKPOINT, CHECKPOINT)]


class JobControls:
    """Cancel, error display and clean-up for a magicgui widget with ``worker``, ``status``, ``run_button``,
    ``cancel_button`` and ``progress``; ``title`` names the widget in notifications, ``unit`` its progress steps."""

    title = "napari-bloodcell"
    unit = "step"
    needs_model = False
    """The job cannot run without a trained model (classify, segment): a model that appears in the registry or the
    recent files while the picker still shows an empty "checkpoint file…" is chosen."""

    @property
    def native(self):  # type: ignore[override]
        """The scroll area around the content: napari 0.9 docks a magicgui widget's ``native``, which for a
        ``Container(scrollable=True)`` is the inner widget, and would drop the scroll area."""
        return self.root_native_widget

    @property
    def content(self):
        """The Qt widget that holds the layout (inside the scroll area)."""
        return self._widget._mgui_get_native_widget()

    def job_widgets(self, run_text: str) -> list:
        """The run and Cancel buttons, the progress bar and the status line every job widget shows; above them a
        line that says why the run button is disabled (shown only then)."""
        from magicgui.widgets import Label, ProgressBar, PushButton

        self.blocked = Label(label="", value="", visible=False)
        self.run_button = PushButton(text=run_text)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, min=0, max=1, visible=False)
        self.status = Label(label="", value="")
        return [self.blocked, self.run_button, self.cancel_button, self.progress, self.status]

    def fit_narrow(self) -> None:
        """Word-wrap every text line and let pickers shrink (a long model path must not widen the dock): the
        widget then fits beside the canvas on a 1366×768 screen, scrolling when docked in a short space."""
        from magicgui.widgets import ComboBox, Label
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QComboBox, QSizePolicy

        for widget in self:
            if isinstance(widget, Label):
                widget.native.setWordWrap(True)
                widget.native.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
                widget.native.setMinimumWidth(80)
            elif isinstance(widget, ComboBox):
                widget.native.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
                widget.native.setMinimumContentsLength(12)
        scroll = self.root_native_widget
        scroll.setMinimumWidth(NARROW + 20)  # magicgui sets the content's full width here
        scroll.setMinimumHeight(120)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAsNeeded)  # only if a part cannot wrap or shrink

    def run_problem(self) -> str | None:
        """What keeps the job from running (shown above the disabled run button), or None."""
        return None

    def reset_choices(self, *args: Any) -> None:
        """napari calls this when layers come or go: the model lists are read again too (a model retrained or
        registered meanwhile)."""
        super().reset_choices(*args)  # type: ignore[misc]
        if not hasattr(self, "run_button"):
            return
        choices = list(self.model.choices)
        seen, self._model_choices_seen = getattr(self, "_model_choices_seen", set(choices)), set(choices)
        if (self.needs_model and set(choices) != seen and self.model.value == CHECKPOINT
                and str(self.checkpoint.value) in ("", ".") and len(choices) > 1):
            texts = [self.model.native.itemText(i) for i in range(len(choices))]
            ranked = sorted(range(len(choices)), key=lambda i: (choices[i] == CHECKPOINT,
                                                                not texts[i].startswith("active ")))
            self.model.value = choices[ranked[0]]  # the registry's active model, else a recent file
        self.update_ready()

    def _model_changed(self, value: str) -> None:
        """The checkpoint picker shows only for "checkpoint file…"; the run button follows the choice."""
        self.checkpoint.visible = value == CHECKPOINT
        self.update_ready()

    def update_ready(self, *_: Any) -> None:
        """Enable the run button only when the job can run; otherwise say why and what to do."""
        if not hasattr(self, "_model_choices_seen"):
            self._model_choices_seen = set(self.model.choices)
        problem = self.run_problem()
        self.blocked.value = problem or ""
        self.blocked.visible = problem is not None
        if getattr(self, "worker", None) is None:
            self.run_button.enabled = problem is None

    def wire_job_controls(self) -> None:
        """Run and Cancel, and the layer choices refreshed whenever a layer comes or goes."""
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)
        self.worker = None

    def start_job(self, job, on_done, message: str) -> None:
        """Run a core job in napari's worker thread: progress to ``_on_progress``, the result to ``on_done``."""
        from napari.qt.threading import thread_worker

        worker = thread_worker(_reporting_errors, ignore_errors=True, start_thread=False)(job)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(on_done)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.progress.visible, self.progress.value = True, 0
        self.status.value = message
        worker.start()

    def _on_progress(self, item: Progress) -> None:
        if item.total:
            self.progress.max, self.progress.value = max(item.total, 1), item.step
            self.status.value = f"{item.stage + ' ' if item.stage else ''}{self.unit} {item.step}/{item.total}"
        else:
            self.status.value = item.text()

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.quit()
            self.status.value = "cancelling…"

    def _on_error(self, exc: Exception | str) -> None:
        from napari.utils.notifications import show_error

        self.status.value = f"failed: {exc}"
        show_error(f"{self.title}: {exc}")

    def _on_finished(self) -> None:
        if self.worker is not None and self.worker.abort_requested:
            self.status.value = "cancelled; nothing was changed"
        self.worker = None
        self.cancel_button.enabled = False
        self.progress.visible = False
        self.update_ready()
