"""Training across processes (torch.distributed, gloo on CPU): two processes with half the batch each train the
same model as one process with the whole batch; Cancel stops every rank; a bad --nproc is one line, exit 2."""

from __future__ import annotations

import math
import multiprocessing
import time

import numpy as np
import pytest
import torch

from napari_bloodcell.cli.main import main
from napari_bloodcell.core.progress import drain
from napari_bloodcell.core.training import launch
from napari_bloodcell.core.training.classification import ClassifierTrainConfig
from napari_bloodcell.core.training.engine import last_path

from .cells import disc_crops

# Why these tolerances: the two runs do the same arithmetic in a different order (convolutions over 2 samples
# instead of 4, batch-norm sums added across processes, gradients averaged by DDP), so float32 rounding differs
# by about 1e-7 relative per operation. Measured on this test (docs/distributed_training.md): losses 8e-8
# relative, validation losses 3e-7, validation logits 1e-6 absolute, stored (float16) weights one float16 step.
# The tolerances leave about 100x room; a real mismatch (a rank seeing other samples, batch norm over half the
# batch) changes the first step's loss itself, and a missing gradient average the second's, far beyond rounding.
# 64-pixel crops, not 32: at 32 ResNet-18's
# last stage is 1x1, its batch norm normalises 4 numbers, and even ONE process's second-step gradients differ by
# 13% between float32 and float64, so no two orders of summation agree there.
LOSS_RTOL = 1e-5
LOGIT_ATOL = 1e-4


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    return disc_crops(tmp_path_factory.mktemp("crops"), per_class=4)


def config(crops, out, **kw) -> ClassifierTrainConfig:
    base = dict(arch="resnet18", data=crops, out=out, epochs=2, batch=4, augment=False, balance="sampler",
                optimizer="sgd", lr=1e-3, val_fraction=0.3, input_size=64, patience=99, device="cpu",
                command="pytest")
    base.update(kw)
    return ClassifierTrainConfig(**base)


def test_two_processes_train_what_one_process_trains(crops, tmp_path):
    runs = {}
    for nproc in (1, 2):
        events = []
        cfg = config(crops, tmp_path / f"n{nproc}.pt", max_iters_per_epoch=1)
        result = drain(launch.train("classifier", cfg, nproc), events.append)
        runs[nproc] = result, [e.metrics["loss"] for e in events if e.kind == "train"]
    (one, one_losses), (two, two_losses) = runs[1], runs[2]
    assert launch.last_exitcodes == [0, 0]
    assert len(one_losses) == len(two_losses) == 2  # 2 epochs of 1 global batch of 4
    np.testing.assert_allclose(two_losses, one_losses, rtol=LOSS_RTOL)  # rank 0 reports the global mean loss
    np.testing.assert_allclose([h["val_loss"] for h in two["history"]], [h["val_loss"] for h in one["history"]],
                               rtol=LOSS_RTOL)
    np.testing.assert_allclose(two["val_scores"], one["val_scores"], atol=LOGIT_ATOL)
    assert two["best_epoch"] == one["best_epoch"]
    a, b = (torch.load(tmp_path / f"n{n}.pt", weights_only=True)["model"] for n in (1, 2))
    assert a.keys() == b.keys()  # synchronised batch norm leaves the checkpoint's names as they were
    for k in a:  # stored as float16: equal up to one float16 step
        assert torch.allclose(a[k].float(), b[k].float(), rtol=2e-3, atol=1e-4), k
    assert not last_path(tmp_path / "n2.pt").exists()  # rank 0 wrote the run's files and tidied up


def test_cancel_stops_every_rank_and_leaves_a_resumable_state(crops, tmp_path):
    # Cancel in the middle of a round of 4 steps (global batch 2: one sample a rank): rank 0 stops at its first
    # event after the close, a step or two into the second epoch, while rank 1 is already on its way into the next
    # step, whose forward pass makes collectives of its own (DDP's buffer broadcast, synchronised batch norm).
    # Rank 0's stop flag must meet rank 1 before them; mismatching them hung both until the launcher's grace.
    out = tmp_path / "cut.pt"
    job = launch.train("classifier", config(crops, out, epochs=3, batch=2, max_iters_per_epoch=4), 2)
    vals, steps = 0, []
    for event in job:
        vals += event.kind == "val"
        if event.kind == "train":
            steps.append((event.epoch, event.step, event.total))
        if vals == 1 and event.kind == "train":  # one step into the second epoch
            break
    assert steps == [(1, 1, 4), (1, 2, 4), (1, 3, 4), (1, 4, 4), (2, 1, 4)]
    began = time.perf_counter()
    job.close()  # Cancel
    assert time.perf_counter() - began < 30  # every rank stopped within a step, none waited out a grace
    assert launch.last_exitcodes == [0, 0]  # both ranks ended on their own, none had to be stopped
    assert launch.last_dropped_errors == []  # ... at the stop flag, not at a broken collective
    assert not [p for p in multiprocessing.active_children() if not p.name.startswith("Dask")]  # (the suite's cluster)
    run = torch.load(last_path(out), weights_only=True)["engine"]
    assert run["stopped"] == "cancelled" and run["round"] == 1 and len(run["history"]) == 1
    assert run["resumes_at_epoch"] == 2 and math.isfinite(run["history"][0]["val_loss"])
    assert run["stopped_in_epoch"] == 2 and 1 <= run["stopped_after_step"] < 4  # mid-round, not at its end


@pytest.mark.parametrize("extra, message", [
    (["--nproc", "0"], "--nproc must be at least 1"),
    (["--nproc", "2", "--batch", "5"], "must divide evenly among the 2 processes"),
    (["--nproc", "2", "--folds", "3"], "--folds and --svm run in one"),
])
def test_a_bad_nproc_is_one_line_and_exit_2(crops, tmp_path, capsys, extra, message):
    code = main(["train", "classifier", "--data", str(crops), "--out", str(tmp_path / "m.pt"), "--arch", "resnet18",
                 "--device", "cpu", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and message in err and "Traceback" not in err
    assert not (tmp_path / "m.pt").exists()


def test_bad_data_found_inside_the_processes_is_one_line_too(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["train", "classifier", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "m.pt"),
                 "--arch", "resnet18", "--device", "cpu", "--batch", "4", "--nproc", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err and err.startswith("bloodcell train: error:")
    assert all(c is not None for c in launch.last_exitcodes)  # no process left behind
    assert not (tmp_path / "m.pt").exists()


def _flood(events) -> None:
    events.put(("progress", 0, b"x" * 1_000_000))  # more than a pipe holds: exiting waits until it is read


def test_stopping_the_processes_reads_their_queue_so_they_can_exit():
    ctx = multiprocessing.get_context("fork")  # the target is this module's; a fork needs no import
    events = ctx.Queue()
    proc = ctx.Process(target=_flood, args=(events,))
    proc.start()
    began = time.perf_counter()
    launch._finish([proc], events, grace=30)  # on Cancel the relay loop no longer reads the queue
    assert proc.exitcode == 0 and time.perf_counter() - began < 10  # ended on its own, not terminated at 30 s
    launch.last_exitcodes.clear()
