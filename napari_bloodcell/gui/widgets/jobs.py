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


class JobControls:
    """Cancel, error display and clean-up for a magicgui widget with ``worker``, ``status``, ``run_button``,
    ``cancel_button`` and ``progress``; ``title`` names the widget in notifications."""

    title = "napari-bloodcell"

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
