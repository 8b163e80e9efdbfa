"""Where ``bloodcell train ... --nproc N`` and torchrun meet the task functions.

:func:`train` is the one entry the CLI drains: with ``nproc`` 1 and no torchrun environment it is the task's own
generator (today's path, unchanged); under torchrun it runs this process as its rank (rank 0 yields the progress,
the others stay silent); with ``nproc`` N it starts N local processes on a free port and relays rank 0's progress,
so the caller sees the same events, result and errors as from one process:

* Cancel (closing the generator) sets a shared stop flag; rank 0 closes its run at its next event, which makes
  every rank stop at the same step (:func:`.distributed.agree`) and leaves ``.last.pt`` marked cancelled;
* a bad input in any rank is one :class:`BloodcellInputError` line; a bug is its traceback; a process that dies
  (killed, out of memory) is named; the other processes are stopped rather than left waiting.

Processes start with ``forkserver`` where there is one (the server imports torch once; later launches fork from
it in a moment), else ``spawn``; each gets ``torch.get_num_threads() // N`` threads (at least 1), so N processes
do not oversubscribe the cores one process would use.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import queue
import socket
import time
import traceback
from collections.abc import Generator
from pathlib import Path
from typing import Any

from ..errors import BloodcellInputError
from ..progress import Progress

TRAINERS = {"detector": ("detection", "train_detector"), "classifier": ("classification", "train_classifier"),
            "segmenter": ("segmentation", "train_segmenter")}
PRELOAD = ["torch", "torchvision", "napari_bloodcell.core.training.distributed",
           "napari_bloodcell.core.training.engine", "napari_bloodcell.core.training.classification",
           "napari_bloodcell.core.training.detection", "napari_bloodcell.core.training.segmentation",
           "napari_bloodcell.core.models.classifiers", "napari_bloodcell.core.classification_metrics",
           "napari_bloodcell.core.inference.classify", "napari_bloodcell.core.datasets.classification",
           "sklearn.metrics", "sklearn.model_selection"]
"""Imported once by the fork server, so each process of a launch starts without importing them again."""
CANCEL_GRACE_S = 120.0
"""After Cancel, how long the processes get to reach their next step and stop on their own."""
FAILURE_GRACE_S = 5.0
"""After one process fails, how long the others get to finish before they are stopped."""
last_exitcodes: list[int | None] = []
"""The exit statuses of the latest launch's processes (0: it stopped on its own; negative: it was stopped)."""
last_dropped_errors: list[tuple[str, str]] = []
"""Errors the latest launch's processes reported after it stopped relaying (after a Cancel, or after the first
failure, which is the one raised): ``(kind, text)``, as a worker sends them. Empty when every rank stopped cleanly."""


def trainer(task: str):
    module, name = TRAINERS[task]
    return getattr(importlib.import_module(f"napari_bloodcell.core.training.{module}"), name)


def train(task: str, cfg: Any, nproc: int = 1) -> Generator[Progress, None, dict[str, Any] | None]:
    """Train ``task`` (detector, classifier, segmenter) with ``cfg`` in ``nproc`` processes; returns the task's
    result (``None`` on a torchrun rank other than 0)."""
    from . import distributed

    env = distributed.torchrun_env()
    if env is not None:
        if nproc != 1:
            raise BloodcellInputError(f"--nproc {nproc} starts processes itself; under torchrun leave it out "
                                      "(torchrun's --nproc-per-node sets how many)")
        return (yield from _as_rank(task, cfg, *env))
    distributed.check_nproc(nproc, int(cfg.batch), str(cfg.device or "auto"))
    if nproc == 1:
        return (yield from trainer(task)(cfg))
    if getattr(cfg, "out", None) is not None:  # refused here, in one line, before any process starts
        from .engine import check_resume

        check_resume(Path(cfg.out), bool(cfg.resume))
    return (yield from _launch(task, cfg, nproc))


def _as_rank(task: str, cfg: Any, rank: int, local_rank: int, world: int):
    """This process as one rank of a torchrun job."""
    import dataclasses

    from . import distributed

    cfg = dataclasses.replace(cfg, device=distributed.rank_device(str(cfg.device or "auto"), local_rank))
    distributed.setup(cfg.device, local_rank)
    try:
        job = trainer(task)(cfg)
        if rank == 0:
            return (yield from job)
        while True:  # the other ranks stay silent
            try:
                next(job)
            except StopIteration:
                return None
    finally:
        distributed.teardown()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _context():
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


def _launch(task: str, cfg: Any, nproc: int) -> Generator[Progress, None, dict[str, Any]]:
    import torch

    ctx = _context()
    events, stop = ctx.Queue(), ctx.Event()
    threads = max(1, torch.get_num_threads() // nproc)
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, nproc, port, task, cfg, events, stop, threads), daemon=True,
                         name=f"bloodcell-train-rank{r}") for r in range(nproc)]
    last_exitcodes.clear()
    last_dropped_errors.clear()
    result, failure, done = None, None, set()
    try:
        for p in procs:
            p.start()
        while len(done) < nproc and failure is None:
            try:
                kind, rank, payload = events.get(timeout=0.2)
            except queue.Empty:
                dead = next((r for r, p in enumerate(procs) if p.exitcode not in (None, 0)), None)
                if dead is not None:
                    failure = _drained_failure(events) or ("input", f"training process {dead} of {nproc} ended "
                                                           f"with status {procs[dead].exitcode} (killed, or out of "
                                                           "memory?); the others were stopped")
                elif all(p.exitcode is not None for p in procs):
                    failure = ("input", "the training processes ended without a result")
                continue
            if kind == "progress":
                yield payload
            elif kind == "error":
                failure = payload
            else:  # "done" (result on rank 0)
                done.add(rank)
                if rank == 0:
                    result = payload
    except GeneratorExit:  # Cancel: rank 0 stops at its next event, and with it every rank
        stop.set()
        raise
    finally:
        _finish(procs, events, FAILURE_GRACE_S if failure else CANCEL_GRACE_S)
    if failure is not None:
        kind, text = failure
        if kind == "input":
            raise BloodcellInputError(text)
        raise RuntimeError(f"a training process failed:\n{text}")
    return result


def _drained_failure(events) -> tuple[str, str] | None:
    """An error message a process sent just before it exited, if one is still in the queue."""
    try:
        while True:
            kind, _, payload = events.get(timeout=0.5)
            if kind == "error":
                return payload
    except queue.Empty:
        return None


def _finish(procs, events, grace: float) -> None:
    """Wait up to ``grace`` seconds for the processes to end on their own, then stop the rest. The queue is read
    (and what is left in it dropped) all the while: a process that put events nobody reads cannot exit, as its
    queue's feeder thread waits to flush them into the full pipe (multiprocessing's "joining processes that use
    queues" deadlock)."""
    deadline = time.monotonic() + grace
    while any(p.pid is not None and p.exitcode is None for p in procs) and time.monotonic() < deadline:
        _discard(events)
        next(p for p in procs if p.pid is not None and p.exitcode is None).join(0.05)
    _discard(events)
    for p in procs:
        if p.pid is not None and p.exitcode is None:
            p.terminate()
            p.join(5)
    if not last_exitcodes:
        last_exitcodes.extend(p.exitcode for p in procs)


def _discard(events) -> None:
    """Empty the queue, keeping only the errors (in :data:`last_dropped_errors`)."""
    try:
        while True:
            kind, _, payload = events.get_nowait()
            if kind == "error":
                last_dropped_errors.append(payload)
    except (queue.Empty, OSError, ValueError, EOFError):
        pass


def _worker(rank: int, world: int, port: int, task: str, cfg: Any, events, stop, threads: int) -> None:
    """One rank of a local launch: join the group, run the task, send rank 0's events; never raise (the parent
    reads what happened from the queue)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world), OMP_NUM_THREADS=str(threads))
    import dataclasses

    import torch

    from . import distributed

    torch.set_num_threads(threads)
    try:
        cfg = dataclasses.replace(cfg, device=distributed.rank_device(str(cfg.device or "auto"), rank))
        distributed.setup(cfg.device, rank)
        job = trainer(task)(cfg)
        while True:
            try:
                event = next(job)
            except StopIteration as end:
                events.put(("done", rank, end.value if rank == 0 else None))
                return
            if rank == 0:
                events.put(("progress", rank, event))
                if stop.is_set():
                    job.close()  # the engine tells the other ranks, and marks .last.pt
                    events.put(("done", rank, None))
                    return
    except BloodcellInputError as exc:
        events.put(("error", rank, ("input", str(exc))))
    except BaseException:  # a bug: its traceback, in the parent's message
        events.put(("error", rank, ("internal", f"process {rank}: {traceback.format_exc()}")))
    finally:
        distributed.teardown()
