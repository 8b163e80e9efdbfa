"""The one fit loop every task trains with: detector, classifier and segmenter.

Modelled on torchvision's ``references/detection`` engine: plain code, no framework. A run is a number of
*rounds* (an epoch, or for patch-trained segmenters a fixed number of iterations); each round trains, then
validates. The engine owns what the three trainers used to copy: seeding, AMP and the gradient scaler on CUDA,
the clipped optimiser step, the divergence check, per-iteration progress with an ETA, the best-by-metric
checkpoint, early stopping, and the resume/cancel contract:

* ``out`` holds the best round's weights, config and metrics only (slim: no optimiser state);
* ``out.last.pt`` holds everything a resume needs (optimiser, scheduler, scaler, history) as of the end of the last
  completed round (or, for a state that takes over a second to write, the last round after which rewriting it kept
  under a fifth of the run: :data:`LAST_WRITE_SHARE`), and is deleted when the run completes (unless
  ``keep_last``, which writes the final state);
* Cancel (closing the generator) leaves ``.last.pt`` at the last round boundary and records where the run stopped;
  an unfinished round is redone on resume. Every round reseeds torch, NumPy and ``random`` from (seed, round), and
  tasks build each round's batches from :func:`round_generator`, so a resumed run repeats exactly the rounds an
  uninterrupted one would run (tested for all three tasks).

Across processes (``torch.distributed`` initialised with more than one rank: ``--nproc`` or torchrun) the same loop
runs on every rank; :mod:`.distributed` describes what changes: the model is wrapped in DistributedDataParallel
(``loss`` is then called with ``net=`` the wrapper), ranks agree on a stop flag before every step and on the loss
after its forward pass, and only rank 0 validates, writes and reports; the other ranks return an empty result when
the run ends or is cancelled.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import BloodcellInputError
from ..progress import Progress
from .steps import optimizer_step

ENGINE_VERSION = 1


def last_path(out: str | Path) -> Path:
    """``model.pt`` → ``model.last.pt``: where a run keeps its resumable state."""
    out = Path(out)
    return out.with_name(out.name[:-3] + ".last.pt" if out.name.endswith(".pt") else out.name + ".last.pt")


def check_resume(out: Path, resume: bool) -> None:
    """A new run never overwrites a checkpoint; a resumed one needs its ``.last.pt``."""
    last = last_path(out)
    if resume and not last.is_file():
        raise BloodcellInputError(f"nothing to resume: {last.name} is not there (a run leaves it when cancelled or "
                                  "interrupted, or when asked to keep it)", last)
    if not resume and (out.exists() or last.exists()):
        raise BloodcellInputError("checkpoint already exists; refusing to overwrite it (choose another --out, or "
                                  "--resume to continue that run)", out)


def round_seed(seed: int, round_: int) -> int:
    return (int(seed) * 1_000_003 + int(round_)) % (2**31 - 1)


def seed_round(seed: int, round_: int, rank: int = 0) -> None:
    """Every random stream a round may draw from, from (seed, round) only; ranks above 0 of a run across processes
    get their own streams (augmentation and dropout of their share of the batch), rank 0 those of one process."""
    s = (round_seed(seed, round_) + 7919 * rank) % (2**31 - 1)
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def round_generator(seed: int, round_: int) -> torch.Generator:
    """The generator a task's sampler or shuffling loader uses in one round."""
    return torch.Generator().manual_seed(round_seed(seed, round_) + 1)


def weights_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


FP16_LIMIT = 60000.0
"""A tensor with values beyond this stays float32 in a half-precision checkpoint (float16 tops out at 65504)."""


def storable(weights: dict[str, torch.Tensor], half: bool) -> dict[str, torch.Tensor]:
    """Weights as a finished checkpoint stores them: float tensors in float16 when ``half`` (half the bytes; loading
    casts back to the model's float32, as YOLOv5/v8 ship their ``best.pt``), apart from any too large for it."""
    if not half:
        return weights
    return {k: v.half() if v.dtype == torch.float32 and (not v.numel() or float(v.abs().max()) < FP16_LIMIT) else v
            for k, v in weights.items()}


@dataclasses.dataclass
class Fit:
    """What a task hands the engine. ``batches(r)`` yields round ``r``'s batches (at most ``iters(r)`` are used);
    ``loss(batch)`` returns the loss and its named parts (it runs under autocast on CUDA); ``validate(r)`` is a
    job returning a metrics dict holding ``metric``; ``describe(metrics, round)`` returns the checkpoint's
    content apart from ``model`` (config, classes, metrics: what inference and the registry read)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    rounds: int
    iters: Callable[[int], int]
    batches: Callable[[int], Iterable[Any]]
    loss: Callable[[Any], tuple[torch.Tensor, dict[str, float]]]
    validate: Callable[[int], Generator[Progress, None, dict[str, Any]]]
    describe: Callable[[dict[str, Any], int], dict[str, Any]]
    metric: str
    higher_is_better: bool = True
    out: Path | None = None
    scheduler: Any = None
    """Stepped once per iteration (warm-up and decay are per-iteration schedules)."""
    train_mode: Callable[[], None] | None = None
    """Puts the model in training mode (a task may keep frozen parts in eval mode)."""
    patience: int | None = None
    """Stop after this many rounds without a better ``metric``."""
    seed: int = 0
    amp: bool = True
    clip: float = 10.0
    resume: Path | dict[str, Any] | None = None
    """A ``.last.pt`` to continue from, or its state already read with :func:`read_last`."""
    keep_last: bool = False
    half_best: bool = True
    """Store the best checkpoint's float weights in float16 (see :func:`storable`); ``.last.pt`` stays float32."""
    round_name: str = "epoch"
    find_unused: bool = False
    """Across processes: parameters may get no gradient in a step (DDP's ``find_unused_parameters``)."""


class _StopAll(Exception):
    """Rank 0 stopped the run (Cancel); this rank leaves at the same step."""


@dataclasses.dataclass
class FitResult:
    history: list[dict[str, Any]]
    best: dict[str, Any]
    best_round: int
    best_weights: dict[str, torch.Tensor] | None
    rounds_run: int
    stopped_early: bool
    seconds: float
    last: Path | None


def _better(value: float, best: float | None, higher: bool) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return best is None
    return best is None or (value > best if higher else value < best)


LAST_WRITE_FLOOR_S = 1.0
"""A resume state written faster than this is written at every round boundary (small models: always)."""
LAST_WRITE_SHARE = 0.2
"""Above the floor, ``.last.pt`` is rewritten only once the time since the last write is 1/share times what that
write took, so writing it costs at most about a fifth of the run: VGG16's state (weights and Adam moments) is
1.6 GB, 9 s a write here, and was written after every 2-s epoch. A resume then redoes the rounds since the state
it finds, which the per-round seeding makes give the same result."""


def _last_due(write_s: float, written_at: float) -> bool:
    return write_s < LAST_WRITE_FLOOR_S or time.perf_counter() - written_at >= write_s / LAST_WRITE_SHARE


def fit(f: Fit) -> Generator[Progress, None, FitResult]:
    """Train ``f.rounds`` rounds; yields ``train``/``val``/``stopped`` events (and the validation job's own)."""
    from . import distributed

    cuda = f.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and f.amp)
    params = [p for g in f.optimizer.param_groups for p in g["params"] if p.requires_grad]
    world, rank = distributed.world_size(), distributed.rank()
    main = rank == 0
    out = f.out if main else None  # only rank 0 writes
    last = last_path(out) if out is not None else None
    start, history, best, best_round, stale = 0, [], None, 0, 0
    best_weights: dict[str, torch.Tensor] | None = None
    if f.resume is not None:
        state = f.resume if isinstance(f.resume, dict) else read_last(f.resume)
        f.model.load_state_dict(state["model"])
        f.optimizer.load_state_dict(state["optimizer"])
        if f.scheduler is not None and state.get("scheduler") is not None:
            f.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        run = state["engine"]
        start, history, stale = int(run["round"]), list(run["history"]), int(run["stale"])
        best, best_round = run["best"], int(run["best_round"])
        if out is not None and Path(out).is_file() and best_round:
            from ..models.checkpoints import safe_torch_load

            best_weights = safe_torch_load(out)["model"]
    # across processes: after every rank's checks (DDP's constructor is a collective), before rank 0's first write
    net = distributed.wrap(f.model, f.device, f.find_unused) if world > 1 else None
    written_round, write_s, written_at = start, 0.0, time.perf_counter()
    if f.resume is None and last is not None:
        _write_last(f, last, scaler, 0, history, best, best_round, stale, {"stopped": "before the first round"})
        write_s, written_at = time.perf_counter() - written_at, time.perf_counter()

    def engine_state(round_: int) -> dict[str, Any]:
        return {"round": round_, "history": history, "best": best, "best_round": best_round, "stale": stale}

    t0, done, stopped_early = time.perf_counter(), 0, False
    total = sum(f.iters(r) for r in range(start, f.rounds))
    round_, running = start, []
    try:
        for round_ in range(start, f.rounds):
            seed_round(f.seed, round_, rank)
            (f.train_mode or f.model.train)()
            n, running = f.iters(round_), []
            for i, batch in enumerate(f.batches(round_)):
                if i >= n:
                    break
                if net is not None and distributed.agree(0.0, False, f.device)[1]:
                    # before any collective of the step (DDP's buffer broadcast, synchronised batch norm): every
                    # rank reaches this point in the same order, and a rank 0 closed at its last yield (Cancel)
                    # answers exactly this agreement (or the end-of-round one) with its stop flag
                    raise _StopAll
                with torch.autocast("cuda", enabled=cuda and f.amp):
                    loss, parts = f.loss(batch) if net is None else f.loss(batch, net=net)
                value = float(loss.detach())
                if net is not None:  # the global mean loss; a NaN anywhere stops every rank alike
                    value = distributed.agree(value, False, f.device)[0] / world
                if not math.isfinite(value):
                    lr = f.optimizer.param_groups[-1]["lr"]
                    raise BloodcellInputError(
                        f"training diverged: the loss became {value} in {f.round_name} {round_ + 1}, "
                        f"iteration {i + 1} ({ {k: round(v, 3) for k, v in parts.items()} }); lower the learning "
                        f"rate (now {lr:g}) or check the data" + (f"; the last good state is in {last}" if last else ""))
                optimizer_step(loss, f.optimizer, scaler, params, f.clip)
                if f.scheduler is not None:
                    f.scheduler.step()
                done += 1
                running.append(value)
                elapsed = time.perf_counter() - t0
                yield Progress("train", i + 1, n, {"loss": running[-1], **parts,
                                                    "lr": f.optimizer.param_groups[-1]["lr"]},
                               epoch=round_ + 1, epochs=f.rounds, eta_s=elapsed / done * (total - done))
            if not all(torch.isfinite(v).all() for v in f.model.state_dict().values() if v.is_floating_point()):
                raise BloodcellInputError(
                    f"training diverged: the weights became infinite or NaN in {f.round_name} {round_ + 1}; lower "
                    f"the learning rate (now {f.optimizer.param_groups[-1]['lr']:g}) or check the data"
                    + (f"; the last good state is in {last}" if last else ""))
            if main:
                metrics = yield from f.validate(round_)
                metrics = {**metrics, f.round_name: round_ + 1,
                           "train_loss": float(np.mean(running)) if running else math.nan}
                history.append(metrics)
                improved = _better(metrics[f.metric], None if best is None else best[f.metric], f.higher_is_better)
                if improved:
                    best, best_round, stale = metrics, round_ + 1, 0
                    best_weights = weights_of(f.model)
                    if out is not None:
                        _save({**f.describe(metrics, round_ + 1), "model": storable(best_weights, f.half_best),
                               "weights_dtype": "float16" if f.half_best else "float32"}, Path(out))
                else:
                    stale += 1
                if last is not None and _last_due(write_s, written_at):
                    began = time.perf_counter()
                    _write_last(f, last, scaler, round_ + 1, history, best, best_round, stale, None)
                    written_round, write_s, written_at = round_ + 1, time.perf_counter() - began, time.perf_counter()
                yield Progress("val", round_ + 1, f.rounds, metrics, epoch=round_ + 1, epochs=f.rounds,
                               best=improved)
                if f.patience is not None and stale >= f.patience:
                    stopped_early = True
                    yield Progress("stopped", round_ + 1, f.rounds, epoch=round_ + 1, epochs=f.rounds,
                                   message=f"early stop: no better {f.metric} in {f.patience} {f.round_name}s")
            if net is not None:  # after rank 0's last yield of the round: its early stop (or Cancel) reaches all
                flag, stop = distributed.agree(1.0 if stopped_early else 0.0, False, f.device)
                if stop:
                    raise _StopAll
                stopped_early = flag > 0
            if stopped_early:
                break
    except _StopAll:
        return FitResult([], {}, 0, None, len(history), False, time.perf_counter() - t0, None)
    except GeneratorExit:
        if net is not None:  # rank 0 is closed only at a yield: after a step, or in or after validation. The
            # other ranks then wait at the next step's first agreement or the end-of-round one: stop them there
            distributed.agree(0.0, True, f.device)
        if last is not None and last.is_file():  # where it stopped; the unfinished round is redone on resume
            _mark_stopped(last, {"stopped": "cancelled", f"stopped_in_{f.round_name}": round_ + 1,
                                 "stopped_after_step": len(running), "resumes_at_" + f.round_name: written_round + 1})
        raise
    if last is not None and f.keep_last and written_round != len(history):
        _write_last(f, last, scaler, len(history), history, best, best_round, stale, None)
    if last is not None and not f.keep_last:
        last.unlink(missing_ok=True)
    return FitResult(history, best or {}, best_round, best_weights, len(history), stopped_early,
                     time.perf_counter() - t0, last if last is not None and last.exists() else None)


def _save(ckpt: dict[str, Any], path: Path) -> None:
    from ..models.checkpoints import save_checkpoint

    save_checkpoint(ckpt, path, exist="replace")


def _write_last(f: Fit, last: Path, scaler, round_: int, history, best, best_round, stale,
                stopped: dict[str, Any] | None) -> None:
    metrics = best or {}
    _save({**f.describe(metrics, best_round), "model": weights_of(f.model),
           "optimizer": f.optimizer.state_dict(),
           "scheduler": f.scheduler.state_dict() if f.scheduler is not None else None,
           "scaler": scaler.state_dict() if scaler.is_enabled() else {},
           "engine": {"version": ENGINE_VERSION, "round": round_, "history": history, "best": best,
                      "best_round": best_round, "stale": stale, "seed": f.seed, **(stopped or {})}}, last)


def _mark_stopped(last: Path, info: dict[str, Any]) -> None:
    from ..models.checkpoints import safe_torch_load

    state = safe_torch_load(last)
    state["engine"] = {**state["engine"], **info}
    _save(state, last)


def read_last(path: Path) -> dict[str, Any]:
    from ..models.checkpoints import safe_torch_load

    state = safe_torch_load(path, "resume state")
    if not isinstance(state, dict) or "engine" not in state or "optimizer" not in state:
        raise BloodcellInputError("not a resumable state (a .last.pt written by an interrupted run); a finished "
                                  "model can start a new run as --weights/--init instead", path)
    return state
