"""The progress/cancel protocol of every long job.

Long jobs are generators: they yield progress (``(done, total)`` or a message) and return their result, so the
same code runs in a script, in a test, in the CLI (through :func:`drain`) and in napari's ``thread_worker``,
which stops a generator at its next ``yield`` when the user presses Cancel.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

T = TypeVar("T")


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
