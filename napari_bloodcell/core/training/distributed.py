"""Training across processes with ``torch.distributed``: the process group, the model wrapper, batch sharding and
the per-step agreement that keeps every rank in step (issue 18, part 3).

One process (``nproc`` 1, no torchrun environment) is today's code path: nothing here runs. With several, each
rank runs the same task function; :func:`~.engine.fit` notices the process group and

* wraps the model in ``DistributedDataParallel`` (gradients averaged over ranks) after converting batch norm to
  synchronised batch norm (``torch.nn.SyncBatchNorm`` on CUDA; :class:`CpuSyncBatchNorm` on CPU, where torch's
  own refuses), so batch statistics are those of the global batch;
* gives each rank its share of each global batch (:func:`data_loader`): the per-round order is the one a single
  process draws from :func:`~.engine.round_generator`, and rank ``r`` of ``N`` takes positions ``r, r+N, ...``
  of every global batch, so ``N`` processes with ``batch/N`` each see the batches one process sees, except that
  a last partial global batch smaller than ``N`` (which one process trains on) is skipped by every rank
  (:class:`RankBatches`), so all take the same steps, and one that does not divide by ``N`` is shared unevenly
  (the mean of the ranks' mean losses then weights the samples of the smaller shares slightly more);
* agrees twice per step (:func:`agree`, an all-reduce of two numbers): before the forward pass, on a stop flag,
  which rank 0 raises when its generator is closed (Cancel) so every rank stops at the same step (this point
  comes before any collective of the step, DDP's buffer broadcast or synchronised batch norm, so every rank
  reaches it in the same order); after the forward pass, on the global mean loss (what rank 0 reports, and a
  non-finite loss on any rank stops every rank with the same message);
* validates, writes checkpoints and ``.last.pt``, and reports progress on rank 0 only; an early stop is rank 0's
  decision, passed on in an agreement at the end of each round (which also passes on a Cancel during validation).

The launcher for ``--nproc N`` (local processes, gloo or NCCL) is :mod:`.launch`; under ``torchrun`` each
process finds its rank in the environment torchrun sets (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import BloodcellInputError

TIMEOUT_ENV = "BLOODCELL_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 3600
"""How long a rank waits at a collective. Rank 0 validates alone while the others wait at the end of each round,
so this must exceed the longest validation (torch's default is 30 min for gloo, 10 for NCCL); a crashed rank is
noticed by the launcher (or torchrun) long before, which stops the others."""


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0 (or the only process): the one that validates, writes and reports."""
    return rank() == 0


def torchrun_env() -> tuple[int, int, int] | None:
    """``(rank, local_rank, world_size)`` when torchrun (or any launcher setting its variables) started this
    process as one of several; ``None`` for a plain process."""
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env or "MASTER_ADDR" not in env:
        return None
    try:
        world, rank_, local = int(env["WORLD_SIZE"]), int(env["RANK"]), int(env.get("LOCAL_RANK", "0"))
    except ValueError as exc:
        raise BloodcellInputError(f"RANK, LOCAL_RANK and WORLD_SIZE must be integers; got {env.get('RANK')!r}, "
                                  f"{env.get('LOCAL_RANK')!r}, {env.get('WORLD_SIZE')!r}") from exc
    if world <= 1:
        return None
    if not 0 <= rank_ < world or local < 0:
        raise BloodcellInputError(f"RANK {rank_} and LOCAL_RANK {local} do not fit WORLD_SIZE {world}")
    return rank_, local, world


def backend_for(device: str) -> str:
    """gloo for CPU training, NCCL for CUDA."""
    cuda = device.startswith("cuda") or (device in ("auto", "", None) and torch.cuda.is_available())
    return "nccl" if cuda else "gloo"


def check_nproc(nproc: int, batch: int, device: str) -> None:
    """Refuse, before any process starts, a count that cannot work: one line each."""
    if nproc < 1:
        raise BloodcellInputError(f"--nproc must be at least 1; got {nproc}")
    if nproc == 1:
        return
    if batch % nproc:
        raise BloodcellInputError(f"--batch {batch} is the global batch and must divide evenly among the {nproc} "
                                  f"processes ({batch}/{nproc} each); choose a batch that is a multiple of {nproc}")
    if device.startswith("cuda:"):
        raise BloodcellInputError(f"--device {device} names one GPU; with --nproc each process takes its own GPU "
                                  "(use --device cuda or auto)")
    if backend_for(device) == "nccl" and nproc > torch.cuda.device_count():
        raise BloodcellInputError(f"--nproc {nproc} asks for one GPU per process, but this machine has "
                                  f"{torch.cuda.device_count()}; use --device cpu for CPU processes")


def rank_device(device: str, local_rank: int) -> str:
    """The device one rank trains on: its own GPU (``cuda:LOCAL_RANK``) under NCCL, else as asked."""
    return f"cuda:{local_rank}" if backend_for(device) == "nccl" else device


def setup(device: str, local_rank: int) -> None:
    """Join the process group the environment describes (``env://``: MASTER_ADDR/PORT, RANK, WORLD_SIZE)."""
    backend = backend_for(device)
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise BloodcellInputError(f"LOCAL_RANK {local_rank} has no GPU (this node has "
                                      f"{torch.cuda.device_count()}); start at most that many processes per node")
        torch.cuda.set_device(local_rank)
    try:
        seconds = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    except ValueError as exc:
        raise BloodcellInputError(f"{TIMEOUT_ENV} must be a number of seconds") from exc
    dist.init_process_group(backend, init_method="env://", timeout=datetime.timedelta(seconds=seconds))


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------ the model


class _AllReduceSum(torch.autograd.Function):
    """A sum over ranks that gradients flow back through (each rank's input gets the sum of the output grads)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CpuSyncBatchNorm(_BatchNorm):
    """Synchronised batch norm for CPU (gloo) processes, where ``torch.nn.SyncBatchNorm`` refuses to run (and DDP
    refuses it): the batch mean and variance are those of the global batch (two differentiable all-reduces: sums,
    then squared deviations), so N processes normalise exactly as one process with the whole batch would."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(input)
        all_reduce = _AllReduceSum.apply
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, c] + [1] * (input.dim() - 2)
        wide = input.double()  # statistics accumulated in float64, as torch's CPU batch norm does
        first = all_reduce(torch.cat([wide.sum(dims), torch.tensor([input.numel() / c], dtype=torch.float64)]))
        n = first[c].detach()
        mean = first[:c] / n
        var = all_reduce(((wide - mean.view(shape)) ** 2).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean.detach().to(input.dtype))
                self.running_var.mul_(1 - m).add_(m * (var.detach() * n / max(float(n) - 1, 1.0)).to(input.dtype))
        out = (input - mean.to(input.dtype).view(shape)) * torch.rsqrt(var + self.eps).to(input.dtype).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def _cpu_sync(module: nn.Module) -> nn.Module:
    """``module`` with every ``BatchNorm*d`` below it replaced by a :class:`CpuSyncBatchNorm` holding the same
    parameters and buffers (as ``SyncBatchNorm.convert_sync_batchnorm`` does for CUDA)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        new = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.training = module.training
        return new
    for name, child in module.named_children():
        module.add_module(name, _cpu_sync(child))
    return module


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every ``BatchNorm*d`` in ``model`` synchronised across ranks (in place below the top level: the same
    parameters, buffers and state-dict keys, so the optimiser and checkpoints are unaffected)."""
    if device.type == "cpu":
        return _cpu_sync(model)
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def wrap(model: nn.Module, device: torch.device, find_unused: bool = False) -> nn.Module:
    """``model`` with synchronised batch norm, inside ``DistributedDataParallel`` (which also broadcasts rank 0's
    weights and buffers, so every rank starts alike; its constructor is a collective, hence a barrier)."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(sync_batchnorm(model, device), _BatchNorm):
        raise BloodcellInputError("a model that is one batch-norm layer cannot train across processes")
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def agree(value: float, stop: bool, device: torch.device) -> tuple[float, bool]:
    """One all-reduce: the sum of every rank's ``value`` and whether any rank asked to stop. Every rank calls it
    at the same points (before and after each step's forward pass, and at the end of each round), which is what
    lets rank 0 stop them all."""
    where = device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([value, 1.0 if stop else 0.0], dtype=torch.float64, device=where)
    dist.all_reduce(t)
    return float(t[0]), bool(t[1] > 0)


# ------------------------------------------------------------------------------------------------- the data


class _Positions(torch.utils.data.Dataset):
    """A dataset whose items are their own indices: a loader over it yields the batches' indices, drawing from the
    generator exactly as the same loader over the real data would."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class RankBatches(torch.utils.data.Sampler):
    """This rank's share (positions ``rank::world``) of every global batch of ``order``; a global batch smaller
    than the number of ranks (a last, partial one) is skipped by every rank, so all take the same steps."""

    def __init__(self, order: torch.utils.data.DataLoader, rank_: int, world: int, n_samples: int,
                 batch: int, drop_last: bool) -> None:
        self.order, self.rank, self.world = order, rank_, world
        full, rest = divmod(n_samples, batch)
        self.n = full + (1 if rest and not drop_last and rest >= world else 0)

    def __iter__(self) -> Iterator[list[int]]:
        for b in self.order:
            if len(b) >= self.world:
                yield list(b[self.rank::self.world])

    def __len__(self) -> int:
        return self.n


def data_loader(dataset: Any, batch: int, *, shuffle: bool = False, sampler: Any = None,
                generator: torch.Generator | None = None, collate_fn: Any = None,
                drop_last: bool = False) -> torch.utils.data.DataLoader:
    """The training loader of one round: exactly today's loader in one process; across processes, this rank's
    share of the same seeded order (``batch`` stays the global batch; each rank loads ``batch / world``)."""
    kwargs = dict(batch_size=batch, shuffle=shuffle, sampler=sampler, generator=generator, drop_last=drop_last,
                  num_workers=0)
    if not active():
        return torch.utils.data.DataLoader(dataset, collate_fn=collate_fn, **kwargs)
    order = torch.utils.data.DataLoader(_Positions(len(dataset)), collate_fn=list, **kwargs)
    n = len(sampler) if sampler is not None else len(dataset)
    # its own generator: a loader without one draws its seed from the global stream, which augmentation uses
    return torch.utils.data.DataLoader(dataset, batch_sampler=RankBatches(order, rank(), world_size(), n, batch,
                                                                          drop_last),
                                       collate_fn=collate_fn, num_workers=0, generator=torch.Generator())


def shard(batch: Any) -> Any:
    """This rank's share (``rank::world``) of a global batch of tensors (a tuple of them, or one)."""
    if not active():
        return batch
    r, w = rank(), world_size()
    return tuple(t[r::w] for t in batch) if isinstance(batch, tuple) else batch[r::w]


def check_batch(batch: int) -> None:
    """Inside a run across processes: the global batch must split evenly."""
    w = world_size()
    if w > 1 and batch % w:
        raise BloodcellInputError(f"batch {batch} is the global batch and must divide evenly among the {w} "
                                  f"processes; choose a multiple of {w}")
