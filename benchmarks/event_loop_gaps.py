"""Event-loop gaps: how long the plugin's jobs keep napari's main (Qt) thread from answering.

A 10 ms precise ``QTimer`` ticks in napari's event loop while each job runs; a *gap* is the time between two ticks
(10 ms when nothing blocks). Reported per job: the largest gap and the 99th percentile, split into the start of the
job (the click), the middle (the worker running) and the end (from the worker's ``returned`` to one second after,
when the result layer is built, added and first drawn). A watchdog thread samples the main thread's stack whenever a
tick is late by more than 40 ms, so every large gap is named by the code it was spent in.

Run under a real X server with OpenGL (Xvfb; Qt's ``offscreen`` platform gives napari's canvas no GL):

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python benchmarks/event_loop_gaps.py [--repeat 2] [--profile-key]

Jobs: *detect* (Plugins ▸ Detect cells, classical detector, sample smear), *review detect now* (the Review widget
detecting a field and opening it), *segment* (the sample head volume, a tiny randomly initialised HighRes3DNet,
CPU), *class key* (pressing ``1``/``2`` on a review of 200 cells), *floor*: napari's own cost of adding a layer
that is already built, at once and in the widgets' steps (``gui/layer_data.add_in_steps``), and *suggest* (the
Review widget's Suggest tab ranking a six-field case with the bundled detector).
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SMEAR = REPO / "sample_data" / "smear" / "JPEGImages" / "smear_0000.png"
HEAD = REPO / "sample_data" / "mri" / "synthetic_t1_000.nii.gz"
STACKS = int(os.environ.get("GAP_STACKS", "0"))
"""With GAP_STACKS=n, the last n frames of each sample are printed for the worst gaps (finding a cause)."""
LATE = 0.040
"""A tick this late (beyond its 10 ms) makes the watchdog sample the main thread's stack."""


@dataclass
class Run:
    name: str
    ticks: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    """The main thread's CPU time at each tick: a gap's own work, apart from waiting for a loaded machine's CPU."""
    trigger: float = 0.0
    returned: float | None = None
    samples: list[tuple[float, str]] = field(default_factory=list)
    stacks: list[tuple[float, list[str]]] = field(default_factory=list)

    def gaps(self, lo: float = -np.inf, hi: float = np.inf, cpu: bool = False) -> np.ndarray:
        """Intervals (ms) between ticks that end in ``(lo, hi]``; with ``cpu``, the main thread's CPU time
        within each instead."""
        t = np.asarray(self.ticks)
        if len(t) < 2:
            return np.zeros(0)
        keep = (t[1:] > lo) & (t[1:] <= hi)
        return np.diff(np.asarray(self.cpu if cpu else t))[keep] * 1000

    def phases(self, cpu: bool = False) -> dict[str, np.ndarray]:
        """Start: the gap holding the click; end: gaps ending after the worker's ``returned``; middle: between."""
        done = self.returned if self.returned is not None else np.inf
        t = np.asarray(self.ticks)
        after = t[t > self.trigger]
        first = after[0] if len(after) else np.inf
        return {"start": self.gaps(self.trigger, first, cpu), "middle": self.gaps(first, done, cpu),
                "end": self.gaps(max(done, first), np.inf, cpu), "all": self.gaps(cpu=cpu)}

    def worst_causes(self, n: int = 3) -> list[str]:
        """The sampled main-thread locations during the worst gaps, most frequent first."""
        t = np.asarray(self.ticks)
        if len(t) < 2:
            return []
        order = np.argsort(np.diff(t))[::-1][:n]
        out = []
        for i in order:
            lo, hi = t[i], t[i + 1]
            where = Counter(s for ts, s in self.samples if lo < ts <= hi)
            if (hi - lo) * 1000 > 50 and where:
                top = "; ".join(f"{s} ×{c}" for s, c in where.most_common(2))
                out.append(f"{(hi - lo) * 1000:.0f} ms: {top}")
        return out


FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<name>\S+)')


def main_thread_stack(dump) -> list[tuple[str, int, str]]:
    """The main thread's frames, outermost first, written by :func:`faulthandler.dump_traceback` (safe while that
    thread runs: walking its live frames from Python crashed CPython 3.11 here)."""
    dump.seek(0)
    dump.truncate()
    faulthandler.dump_traceback(dump, all_threads=True)
    dump.flush()
    dump.seek(0)
    header = f"Thread 0x{threading.main_thread().ident:016x}"
    frames, inside = [], False
    for line in dump.read().splitlines():
        if line.startswith(("Thread 0x", "Current thread 0x")):
            inside = header in line
        elif inside and (m := FRAME.search(line)):
            frames.append((m["file"], int(m["line"]), m["name"]))
    return frames[::-1]


def _where(stack: list[tuple[str, int, str]]) -> str:
    """A compact name for what the main thread is doing: our innermost frame and the innermost library frame."""
    ours = [f for f in stack if "napari_bloodcell" in f[0]]
    lib = [f for f in stack if "site-packages" in f[0] or "/lib/python" in f[0]]
    parts = []
    if ours:
        parts.append(f"{Path(ours[-1][0]).name}:{ours[-1][1]} {ours[-1][2]}")
    if lib:
        parts.append(f"{lib[-1][0].split('site-packages/')[-1]}:{lib[-1][1]} {lib[-1][2]}")
    if not parts and stack:
        parts.append(f"{Path(stack[-1][0]).name}:{stack[-1][1]} {stack[-1][2]}")
    return " ← ".join(reversed(parts)) or "?"


class Monitor:
    """The 10 ms ticker in the event loop and the watchdog thread that names late ticks."""

    def __init__(self) -> None:
        from qtpy.QtCore import Qt, QTimer

        self.run: Run | None = None
        self.runs: list[Run] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.PreciseTimer)
        self.timer.setInterval(10)
        self.timer.timeout.connect(self._tick)
        self._stop = threading.Event()
        self._dog = threading.Thread(target=self._watch, daemon=True)
        self._dog.start()

    def _tick(self) -> None:
        if self.run is not None:
            self.run.ticks.append(time.perf_counter())
            self.run.cpu.append(time.thread_time())

    def _watch(self) -> None:
        with tempfile.TemporaryFile("w+") as dump:
            while not self._stop.wait(0.005):
                run = self.run
                if run is None or not run.ticks:
                    continue
                now = time.perf_counter()
                if now - run.ticks[-1] > 0.010 + LATE:
                    stack = main_thread_stack(dump)
                    if stack:
                        run.samples.append((now, _where(stack)))
                        if STACKS:
                            run.stacks.append((now, [f"  {f} line {n} in {name}\n" for f, n, name in stack[-STACKS:]]))

    @contextlib.contextmanager
    def measure(self, name: str):
        self.run = Run(name)
        self._tick()
        self.timer.start()
        try:
            yield self.run
        finally:
            self.timer.stop()
            self.runs.append(self.run)
            self.run = None

    def close(self) -> None:
        self._stop.set()


def spin(seconds: float) -> None:
    """Run napari's event loop for ``seconds``."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec_()


def spin_until(condition, timeout: float = 600.0) -> None:
    """Run the event loop until ``condition()`` holds (checked every 5 ms)."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    poll = QTimer()
    poll.timeout.connect(lambda: condition() and loop.quit())
    poll.start(5)
    deadline = QTimer()
    deadline.setSingleShot(True)
    deadline.timeout.connect(loop.quit)
    deadline.start(int(timeout * 1000))
    loop.exec_()
    poll.stop()
    if not condition():
        raise TimeoutError("the job did not finish")


def run_job(monitor: Monitor, name: str, start, worker_of, done, settle: float = 1.0) -> Run:
    """Start a job from inside the event loop, note when its worker returns, wait for ``done`` and ``settle``."""
    from qtpy.QtCore import Qt, QTimer

    with monitor.measure(name) as run:
        spin(0.2)

        def go() -> None:
            run.trigger = time.perf_counter()
            start()
            worker = worker_of()
            if worker is not None:  # runs in the worker thread, at the moment it hands over its result
                worker.returned.connect(lambda *_: setattr(run, "returned", time.perf_counter()),
                                        Qt.DirectConnection)

        QTimer.singleShot(0, go)
        spin_until(lambda: run.trigger and done())
        spin(settle)
    return run


# ------------------------------------------------------------------------------------------------------- jobs
def bench_detect(viewer, monitor: Monitor, repeat: int) -> None:
    from napari_bloodcell.gui.widgets.detect import DetectWidget

    viewer.open(str(SMEAR), plugin="napari-bloodcell")
    widget = DetectWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Detect cells")
    spin(0.5)
    for k in range(repeat):
        run_job(monitor, f"detect, run {k + 1}", widget.run, lambda: widget.worker, lambda: widget.worker is None)
        print(f"  detect run {k + 1}: {widget.status.value}", flush=True)


def bench_review_detect(viewer, monitor: Monitor, repeat: int, tmp: Path, reviewer: str = "bench") -> None:
    from napari_bloodcell.gui.widgets.review import DETECT_NOW, ReviewWidget

    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Review cells")
    widget.reviewer_edit.setText(reviewer)
    image = [layer.name for layer in viewer.layers if layer._type_string == "image"][0]
    spin(0.5)
    for k in range(repeat):
        widget.project_edit.setText(str(tmp / f"review_project_{k}"))  # a fresh project: detected, not restored
        widget.image_combo.setCurrentText(image)
        widget.boxes_combo.setCurrentText(DETECT_NOW)
        run_job(monitor, f"review detect now, run {k + 1}", widget.start, lambda: widget.worker,
                lambda: widget.worker is None and widget.session is not None)
        print(f"  review run {k + 1}: {len(widget.session.table)} cells", flush=True)
    widget.close_session()


def bench_suggest(viewer, monitor: Monitor, repeat: int, tmp: Path, reviewer: str = "bench") -> None:
    """The Review widget's Suggest tab ranking a case of six synthetic smears with the bundled detector."""
    from napari_bloodcell.core.cases import Case
    from napari_bloodcell.core.io.formats import read_annotations
    from napari_bloodcell.core.review_project import ReviewProject
    from napari_bloodcell.core.progress import drain
    from napari_bloodcell.core.synthetic.samples import write_samples
    from napari_bloodcell.gui.widgets.review import ReviewWidget

    smears = tmp / "suggest_smears"
    drain(write_samples("smear", smears, seed=1, count=6))
    project = ReviewProject(tmp / "suggest_project")
    images = sorted((smears / "JPEGImages").iterdir())
    Case.create(project, "slide", by=reviewer).add_images(
        images, annotations=read_annotations(smears / "annotations.json"), review_default="unreviewed")
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Review (suggest)")
    widget.reviewer_edit.setText(reviewer)
    widget.project_edit.setText(str(project.folder))
    widget.case_panel.refresh_names()
    widget.case_panel.open_case("slide")
    spin_until(lambda: widget.case_panel.busy == 0 and widget.session is not None)
    widget.tabs.setCurrentIndex(widget.tabs.count() - 1)
    panel = widget.suggest_panel
    for k in range(repeat):
        run_job(monitor, f"suggest, run {k + 1}", panel.suggest, lambda: panel.worker,
                lambda: panel.worker is None)
        print(f"  suggest run {k + 1}: {panel.status.text()}", flush=True)


def tiny_segmenter(path: Path, names: dict[int, str]) -> Path:
    """A randomly initialised narrow HighRes3DNet checkpoint (the shape of a trained one, no skill)."""
    import torch

    from napari_bloodcell.core.inference.segment3d import build_segmenter_model
    from napari_bloodcell.core.models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    args = {"in_channels": 1, "n_classes": len(names), "features": [4, 8, 8], "head_features": 8}
    model = build_segmenter_model("highres3dnet", args)
    values = sorted(names)
    save_checkpoint({"format": "napari-bloodcell/segmenter", "arch": "highres3dnet", "arch_args": args,
                     "classes": [names[v] for v in values], "label_values": values,
                     "label_names": {str(v): n for v, n in names.items()},
                     "preprocessing": {"normalise": "zscore per volume and channel", "patch": [32, 32, 32],
                                       "spacing": None, "channels": 1},
                     "model": {k: v.detach() for k, v in model.state_dict().items()}}, path, exist="replace")
    return path


def bench_segment(viewer, monitor: Monitor, repeat: int, tmp: Path) -> None:
    from napari_bloodcell.gui.widgets.jobs import CHECKPOINT
    from napari_bloodcell.gui.widgets.segment import SegmentWidget

    ckpt = tiny_segmenter(tmp / "tiny_segmenter.pt", {0: "background", 1: "left hippocampus", 2: "right hippocampus"})
    viewer.open(str(HEAD), plugin="napari-bloodcell")
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment volume")
    widget.volume.value = viewer.layers[-1]
    if CHECKPOINT in widget.model.choices:
        widget.model.value = CHECKPOINT
        widget.checkpoint.value = ckpt
    else:
        widget.model.value = str(ckpt)
    widget.device.value = "cpu"
    widget.patch.value, widget.overlap.value = 32, 0.0  # 27 windows: the stalls, not the network, are measured
    spin(0.5)
    for k in range(repeat):
        run_job(monitor, f"segment, run {k + 1}", widget.run, lambda: widget.worker, lambda: widget.worker is None)
        print(f"  segment run {k + 1}: {widget.status.value[:100]}", flush=True)


def review_of_cells(viewer, tmp: Path, n: int = 200, reviewer: str = "bench"):
    """A review of ``n`` boxes on the sample smear (a Shapes layer of ``n`` classed boxes, then Start)."""
    from napari_bloodcell.core.io.records import AnnotationSet, ImageRecord
    from napari_bloodcell.gui.layers import shapes_layer
    from napari_bloodcell.gui.widgets.review import ReviewWidget

    image = [layer for layer in viewer.layers if layer._type_string == "image" and layer.ndim == 2][0]
    h, w = image.data.shape[:2]
    rng = np.random.default_rng(0)
    xy = rng.uniform([0, 0], [w - 30, h - 30], size=(n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(15, 30, size=(n, 2))], 1)
    rec = ImageRecord(SMEAR.name, w, h, boxes, rng.integers(0, 3, n), scores=rng.uniform(0.05, 1, n),
                      sources=["bench"] * n, reviews=["unreviewed"] * n)
    data, kwargs, _ = shapes_layer(AnnotationSet(["RBC", "WBC", "Platelets"], [rec]), f"{n} cells", stacked=False)
    viewer.add_shapes(data, **kwargs)
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Review 200")
    widget.project_edit.setText(str(tmp / "key_project"))
    widget.reviewer_edit.setText(reviewer)
    widget.image_combo.setCurrentText(image.name)
    widget.boxes_combo.setCurrentText(f"{n} cells")
    widget.start()
    return widget


def press(viewer, key: str) -> None:
    viewer.window._qt_viewer.canvas._key_map_handler.press_key(key)
    viewer.window._qt_viewer.canvas._key_map_handler.release_key(key)


def bench_class_key(viewer, monitor: Monitor, tmp: Path, presses: int, profile: bool,
                    tabs: tuple[str, ...] = ("Cell",), interval: float = 0.15) -> None:
    """Class keys every ``interval`` seconds with each of the Review widget's ``tabs`` shown in turn (the Gallery
    and Count tabs redraw after a pause in the keys)."""
    from qtpy.QtCore import QTimer

    widget = review_of_cells(viewer, tmp)
    spin(1.0)
    for tab in tabs:
        titles = [widget.tabs.tabText(i) for i in range(widget.tabs.count())]
        widget.tabs.setCurrentIndex(titles.index(tab))
        spin(0.5)
        with monitor.measure(f"class key ×{presses} every {interval * 1000:.0f} ms, {len(widget.session.table)} "
                             f"cells, {tab} tab") as run:
            spin(0.2)
            run.trigger = time.perf_counter()
            for k in range(presses):
                QTimer.singleShot(int(interval * 1000 * k), lambda k=k: press(viewer, "12"[k % 2]))
            spin(interval * presses + 0.6)
    if profile:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for k in range(5):
            press(viewer, "12"[k % 2])
            spin(0.05)
        prof.disable()
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out).sort_stats("cumulative")
        stats.print_stats(r"napari_bloodcell|paintGL|_draw_idle|_QtMainWindow|_process_event|qt_layer_model", 40)
        stats.sort_stats("tottime").print_stats(15)
        print("\ncProfile of 5 class keys (each followed by 50 ms of event loop), by cumulative time (the plugin's "
              "functions, drawing, Qt), then by own time:")
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:14000])
    widget.close_session()


def bench_floor(viewer, monitor: Monitor, repeat: int) -> None:
    """napari's own cost of adding a layer that is already built (what the widgets leave to the main thread): a
    Shapes layer of 30 classed boxes with text, and the sample head's label map, at once and in steps."""
    from napari.layers import Labels, Shapes

    from napari_bloodcell.core.io.records import AnnotationSet, ImageRecord
    from napari_bloodcell.gui.layer_data import add_in_steps
    from napari_bloodcell.gui.layers import shapes_layer

    rng = np.random.default_rng(1)
    xy = rng.uniform([0, 0], [600, 440], size=(30, 2))
    rec = ImageRecord("x.png", 640, 480, np.concatenate([xy, xy + 25], 1), rng.integers(0, 3, 30),
                      scores=rng.uniform(0.05, 1, 30), sources=["bench"] * 30, reviews=["unreviewed"] * 30)
    data, kwargs, _ = shapes_layer(AnnotationSet(["RBC", "WBC", "Platelets"], [rec]), "floor", stacked=False)
    head = (np.random.default_rng(2).random((80, 96, 72)) > 0.9).astype(np.uint8)
    makers = {"Shapes, 30 boxes": lambda: Shapes(data, **kwargs), "Labels, 80×96×72": lambda: Labels(head)}
    for what, make in makers.items():
        for k in range(repeat):
            for mode in ("at once", "in steps"):
                layer = make()
                with monitor.measure(f"napari: add a built {what} ({mode}), {k + 1}") as run:
                    spin(0.2)
                    run.trigger = run.returned = time.perf_counter()
                    viewer.add_layer(layer) if mode == "at once" else add_in_steps(viewer, layer)
                    spin(0.8)
                viewer.layers.selection.active = viewer.layers[0]
                layer.visible = False  # kept (not removed: see the software-GL crash in the toolchain notes)


# ----------------------------------------------------------------------------------------------------- report
def table(runs: list[Run]) -> str:
    rows = ["| job | ticks | max gap, ms: start / middle / end | max gap, ms | 99th pct, ms | main-thread CPU in "
            "a gap, max ms: start / middle / end |", "|---|---|---|---|---|---|"]
    fmt = lambda a: f"{a.max():.0f}" if len(a) else "–"
    for r in runs:
        ph, cpu = r.phases(), r.phases(cpu=True)
        p99 = f"{np.percentile(ph['all'], 99):.0f}" if len(ph["all"]) else "–"
        rows.append(f"| {r.name} | {len(r.ticks)} | {fmt(ph['start'])} / {fmt(ph['middle'])} / {fmt(ph['end'])} "
                    f"| {fmt(ph['all'])} | {p99} | {fmt(cpu['start'])} / {fmt(cpu['middle'])} / {fmt(cpu['end'])} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs of each job (the first pays first-use costs)")
    parser.add_argument("--presses", type=int, default=10, help="class keys pressed on the 200-cell review")
    parser.add_argument("--profile-key", action="store_true", help="cProfile five class keys and print the top")
    parser.add_argument("--tabs", nargs="*", default=["Cell", "Gallery", "Count"],
                        help="the Review widget's tabs to show, in turn, while the keys are pressed")
    parser.add_argument("--interval", type=float, default=0.4, help="seconds between class keys")
    parser.add_argument("--only", nargs="*", default=["detect", "review", "segment", "key", "floor", "suggest"],
                        choices=["detect", "review", "segment", "key", "floor", "suggest"])
    args = parser.parse_args(argv)
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen" or not os.environ.get("DISPLAY"):
        print("needs an X server with GL: run under xvfb-run -a (offscreen has no OpenGL for napari's canvas)")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="event_loop_gaps_"))
    os.environ["BLOODCELL_HOME"] = str(tmp / "home")  # no registry, no recent models: a fresh install
    import napari

    t0 = time.perf_counter()
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    print(f"viewer up in {time.perf_counter() - t0:.1f} s; pandas imported: {'pandas' in sys.modules}, "
          f"torch imported: {'torch' in sys.modules}", flush=True)
    monitor = Monitor()
    spin(1.0)
    if "detect" in args.only or "review" in args.only or "key" in args.only:
        if "detect" in args.only:
            bench_detect(viewer, monitor, args.repeat)
        else:
            viewer.open(str(SMEAR), plugin="napari-bloodcell")
    if "review" in args.only:
        bench_review_detect(viewer, monitor, args.repeat, tmp)
    if "key" in args.only:
        bench_class_key(viewer, monitor, tmp, args.presses, args.profile_key, tuple(args.tabs), args.interval)
    if "segment" in args.only:
        bench_segment(viewer, monitor, args.repeat, tmp)
    if "floor" in args.only:
        bench_floor(viewer, monitor, args.repeat)
    if "suggest" in args.only:
        bench_suggest(viewer, monitor, args.repeat, tmp)
    monitor.close()
    print()
    print(table(monitor.runs))
    print("\nwhere the main thread was during gaps above 50 ms (sampled every 5 ms once a tick is 40 ms late):")
    for r in monitor.runs:
        for line in r.worst_causes():
            print(f"  {r.name}: {line}")
        if STACKS:
            t = np.asarray(r.ticks)
            for i in np.argsort(np.diff(t))[::-1][:3]:
                print(f"--- {r.name}: gap of {(t[i + 1] - t[i]) * 1000:.0f} ms")
                for ts, stack in r.stacks:
                    if t[i] < ts <= t[i + 1]:
                        print("".join(stack))
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
