"""What the background-job widgets (Detect cells, Classify cells) share: errors as values, devices, Cancel."""

from __future__ import annotations

import dataclasses

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

    def job_widgets(self, run_text: str) -> list:
        """The run and Cancel buttons, the progress bar and the status line every job widget shows."""
        from magicgui.widgets import Label, ProgressBar, PushButton

        self.run_button = PushButton(text=run_text)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, min=0, max=1, visible=False)
        self.status = Label(label="", value="")
        return [self.run_button, self.cancel_button, self.progress, self.status]

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

    def _on_progress(self, item) -> None:
        if isinstance(item, tuple):
            self.progress.max, self.progress.value = max(item[1], 1), item[0]
            self.status.value = f"{self.unit} {item[0]}/{item[1]}"
        else:
            self.status.value = str(item)

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
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self.progress.visible = False
