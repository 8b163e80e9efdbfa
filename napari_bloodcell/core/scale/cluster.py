"""Where an archive job runs: a local Dask cluster of worker processes, or an existing cluster's scheduler.

The plugin schedules nothing itself: :func:`dask_client` opens a ``distributed.LocalCluster`` (processes, one
thread each unless asked, so N workers use N cores) or connects to ``--scheduler ADDRESS`` (a cluster started by
``dask scheduler``/``dask worker``, dask-jobqueue on SLURM/PBS, or dask-kubernetes), and :func:`completed` turns
futures into progress events as they finish. Workers must see the same file paths as the machine that submits
(a shared file system), as with any Dask cluster reading files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Generator, Iterator, Sequence
from typing import Any

from ..errors import BloodcellInputError

CONNECT_TIMEOUT_S = 20
"""How long to wait for an existing scheduler before saying it cannot be reached (``BLOODCELL_DASK_CONNECT_S``)."""
MAX_WORKERS = 256
QUIET = {"distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s"}
"""Dask settings for every cluster the plugin starts or joins: the statistical profiler (a sample every 10 ms) and
the 20-ms event-loop watchdog cost each idle worker about 5 % of a core here (measured: 0.67 s of CPU per worker
in 15 idle seconds, 0.10 s with these), which archive jobs on a small machine cannot spare."""


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """``workers`` local worker processes, or the ``scheduler`` address of a running cluster (not both)."""

    workers: int | None = None
    scheduler: str | None = None
    threads: int = 1
    """Threads per local worker (torch's intra-op threads follow it: Dask sets OMP_NUM_THREADS)."""

    def __post_init__(self) -> None:
        if self.workers is not None and self.scheduler:
            raise BloodcellInputError("give --workers N (a local cluster) or --scheduler ADDRESS (an existing one), "
                                      "not both")
        if self.workers is not None and not 1 <= int(self.workers) <= MAX_WORKERS:
            raise BloodcellInputError(f"--workers must be 1..{MAX_WORKERS}; got {self.workers}")
        if not 1 <= int(self.threads) <= 256:
            raise BloodcellInputError(f"threads per worker must be 1..256; got {self.threads}")
        if self.scheduler is not None and not str(self.scheduler).strip():
            raise BloodcellInputError("--scheduler needs an address, e.g. tcp://10.0.0.5:8786")

    @property
    def wanted(self) -> bool:
        return self.workers is not None or bool(self.scheduler)

    def describe(self) -> str:
        if self.scheduler:
            return f"the Dask cluster at {self.scheduler}"
        return f"a local Dask cluster of {self.workers} worker process(es)"


def connect_timeout_s() -> float:
    raw = os.environ.get("BLOODCELL_DASK_CONNECT_S", "").strip()
    try:
        return max(0.5, float(raw)) if raw else CONNECT_TIMEOUT_S
    except ValueError:
        raise BloodcellInputError(f"BLOODCELL_DASK_CONNECT_S={raw!r} is not a number of seconds") from None


@contextlib.contextmanager
def dask_client(spec: ClusterSpec) -> Iterator[Any]:
    """A ``distributed.Client`` for ``spec``, closed (with its local cluster) on exit, Cancel included."""
    import dask

    with dask.config.set(QUIET):
        yield from _client(spec)


def _client(spec: ClusterSpec) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    if spec.scheduler:
        try:
            client = Client(spec.scheduler, timeout=f"{connect_timeout_s()}s", set_as_default=False)
        except Exception as exc:  # OSError, TimeoutError, or what the comm layer raises after an earlier cluster
            raise BloodcellInputError(f"cannot reach the Dask scheduler at {spec.scheduler!r} "
                                      f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                                      ) from None
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(n_workers=int(spec.workers or 1), threads_per_worker=int(spec.threads), processes=True,
                           dashboard_address=":0", silence_logs=logging.ERROR, memory_limit=0)
    try:
        client = Client(cluster, set_as_default=False)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def completed(client: Any, futures: Sequence[Any]) -> Generator[Any, None, None]:
    """Each future as it finishes (success or failure); closing the generator cancels the rest, so Cancel in
    the CLI or a widget stops the cluster's work at once instead of after the queue drains."""
    from distributed import as_completed

    pending = list(futures)
    try:
        for future in as_completed(pending, loop=client.loop):
            yield future
    finally:
        unfinished = [f for f in pending if not f.done()]
        if unfinished:
            client.cancel(unfinished)


def worker_error(future: Any) -> str:
    """A failed task's exception as one line (the worker's traceback is not the user's business)."""
    if future.status == "cancelled":
        return "cancelled on the cluster (a worker was lost or the scheduler stopped it)"
    exc = future.exception()
    if isinstance(exc, BloodcellInputError):
        return str(exc)
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
