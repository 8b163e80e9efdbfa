"""The progress/cancel protocol of every long job.

Long jobs are generators: they yield :class:`Progress` events and return their result, so the same code runs in a
script, in a test, in the CLI (through :func:`drain`) and in napari's ``thread_worker``, which stops a generator at
its next ``yield`` when the user presses Cancel. Consumers read fields (``kind``, ``step``/``total``, ``metrics``,
``message``), never parse text; a job that runs another job passes its events up with :func:`relay`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

KINDS = ("load", "step", "train", "validate", "val", "predict", "compare", "stopped", "message")
"""``load``: reading data or a model; ``step``: a unit of an inference job (an image, a tile, a window);
``train``: one optimiser iteration; ``validate``: one validation item; ``val``: a validation's result (its
``metrics``); ``predict``: a batch of predictions inside training; ``compare``: scoring the active model before
registering a new one; ``stopped``: an early stop; ``message``: anything else worth a status line."""


@dataclasses.dataclass(frozen=True)
class Progress:
    """One progress event. ``step`` of ``total`` counts the unit ``kind`` names (0 of 0: no count);
    ``stage`` names the sub-job it came from (e.g. ``classify`` inside a review's detection)."""

    kind: str
    step: int = 0
    total: int = 0
    metrics: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    message: str = ""
    stage: str = ""
    epoch: int = 0
    """Training only: the round (epoch, or validation round of an iteration-counted task) this event is in."""
    epochs: int = 0
    eta_s: float | None = None
    best: bool = False
    """``val`` only: this validation is the best so far (its weights were written)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown progress kind {self.kind!r}")

    @property
    def fraction(self) -> float | None:
        return self.step / self.total if self.total > 0 else None

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for a JSON line between a CLI process and the widget that started it)."""
        return {**dataclasses.asdict(self), "metrics": dict(self.metrics)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Progress:
        """The event of :meth:`as_dict`'s output; unknown keys are ignored (a newer writer), a bad kind refused."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def text(self) -> str:
        """A status line: the message, else ``kind step/total``."""
        if self.message:
            return self.message
        count = f" {self.step}/{self.total}" if self.total else ""
        return f"{self.stage + ': ' if self.stage else ''}{self.kind}{count}"


def step(done: int, total: int, message: str = "") -> Progress:
    return Progress("step", done, total, message=message)


def note(message: str, kind: str = "message") -> Progress:
    return Progress(kind, message=message)


def relay(job: Generator[Progress, None, T], stage: str = "",
          change: Callable[[Progress], Progress | None] | None = None) -> Generator[Progress, None, T]:
    """Run a sub-job inside a job (``result = yield from relay(sub, "classify")``): its events pass up tagged with
    ``stage`` (unless already tagged), optionally rewritten or dropped (``change`` returning None)."""
    while True:
        try:
            item = next(job)
        except StopIteration as stop:
            return stop.value
        except GeneratorExit:
            job.close()
            raise
        if stage and not item.stage:
            item = dataclasses.replace(item, stage=stage)
        if change is not None:
            item = change(item)
        if item is not None:
            try:
                yield item
            except GeneratorExit:
                job.close()  # Cancel reaches the sub-job, so it can leave its resumable state
                raise


class Cancelled(Exception):
    """Raised by :func:`drain` when ``should_stop`` says the job must end."""


def drain(
    job: Generator[Any, None, T],
    on_progress: Callable[[Any], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> T:
    """Run a generator job to the end, passing each yielded item to ``on_progress``; return its result."""
    while True:
        try:
            item = next(job)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(item)
        if should_stop is not None and should_stop():
            job.close()
            raise Cancelled("stopped on request")
