"""The verbs: info, convert, sample, view. Each parses its arguments and calls core."""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path


def command_line() -> str:
    """The command as typed, recorded in checkpoints and the registry so every model says how it was made."""
    return "bloodcell " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def json_ready(obj):
    """``obj`` as plain JSON values: numpy arrays and numbers as lists and numbers, NaN and infinities as null
    (JSON has no NaN), anything else as ``str``; the result always passes ``json.dumps(..., allow_nan=False)``."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [json_ready(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, str):
        return json_ready(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    return str(obj)


def number_in(low: float, high: float, low_open: bool = False, high_open: bool = False):
    """An argparse type for a finite number in a range (``nan``, ``inf`` and values outside are refused with
    argparse's one-line usage error, exit 2)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        ok = math.isfinite(value) and (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high)
        if not ok:
            span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise argparse.ArgumentTypeError(f"{text} is outside {span}")
        return value

    parse.__name__ = "number"
    return parse


FRACTION = number_in(0.0, 1.0)
"""A score, margin or threshold in [0, 1]."""
IOU = number_in(0.0, 1.0, low_open=True)
"""An intersection-over-union threshold in (0, 1]: 0 would pair every box with every other."""
POSITIVE = number_in(0.0, 1e6, low_open=True)
NON_NEGATIVE = number_in(0.0, 1e6)


def refuse_existing_out(out: Path) -> None:
    """A verb's --out file is created, never overwritten."""
    if Path(out).exists():
        from ..core.errors import BloodcellInputError

        raise BloodcellInputError("already exists; refusing to overwrite it (choose another --out)", out)


def add_cluster_arguments(p) -> None:
    """``--workers N`` / ``--scheduler ADDRESS``: run an archive on a Dask cluster, resumably (docs/scale.md)."""
    g = p.add_argument_group("archives on a Dask cluster (each result is kept as it finishes; a rerun skips "
                             "finished inputs)")
    g.add_argument("--workers", type=int, metavar="N", help="run on a local Dask cluster of N worker processes")
    g.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing Dask cluster (e.g. tcp://host:8786); "
                   "its workers must see the same paths")
    g.add_argument("--threads-per-worker", type=int, default=1, metavar="T",
                   help="threads of each local worker (default 1: N workers use N cores)")


def add_nproc_argument(p) -> None:
    """``--nproc N`` of every train verb (torch.distributed, docs/distributed_training.md)."""
    p.add_argument("--nproc", type=int, default=1, help="train in N processes (one per GPU, or N CPU processes); "
                   "--batch stays the global batch (docs/distributed_training.md; under torchrun leave it out)")


def cluster_spec(args: argparse.Namespace):
    """The cluster the arguments ask for (``.wanted`` False: run here, as without them)."""
    from ..core.scale.cluster import ClusterSpec

    return ClusterSpec(workers=args.workers, scheduler=args.scheduler, threads=args.threads_per_worker)


def plots_folder(folder: Path) -> Path:
    """A folder for plots: new or existing, never a file; the plots themselves are never written over."""
    from ..core.errors import BloodcellInputError

    if folder.exists() and not folder.is_dir():
        raise BloodcellInputError("is a file; --plots needs a folder", folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def kind_group(sub, verb: str, help: str):
    """The ``KIND`` sub-commands of a verb (``train detector``, ``train classifier``, ...), made once and shared
    by the modules that add kinds to it."""
    groups = getattr(sub, "bloodcell_kinds", None)
    if groups is None:
        groups = sub.bloodcell_kinds = {}
    if verb not in groups:
        groups[verb] = sub.add_parser(verb, help=help).add_subparsers(dest="kind", required=True, metavar="KIND")
    return groups[verb]


def _progress(label: str, quiet: bool):
    from .progress_report import reporter

    return reporter(label, quiet)


# ----------------------------------------------------------------------------------------------------- info


def _print_info(d: dict) -> None:
    print(f"{d['path']}: {d['kind']}")
    if d["kind"] == "image":
        print(f"  shape {tuple(d['shape'])}, dtype {d['dtype']}, {'RGB' if d['rgb'] else 'greyscale'}")
    elif d["kind"] in ("volume", "label_map"):
        print(f"  shape {tuple(d['shape'])}, dtype {d['dtype']}, channels {d['channels']}")
        print(f"  spacing (mm) {tuple(d['spacing'])}, orientation {d['orientation']}")
        print("  affine:")
        for row in d["affine"]:
            print("    " + "  ".join(f"{v:10.4f}" for v in row))
        if "labels" in d:
            for value, stats in d["labels"].items():
                named = f" ({stats['name']})" if stats.get("name") else ""
                print(f"  label {value}{named}: {stats['voxels']} voxels, {stats['mm3']} mm3")
        if "intensity" in d:
            i = d["intensity"]
            extra = f", {i['non_finite']} NaN/inf voxel(s)" if i["non_finite"] else ""
            print(f"  intensity {i['min']} to {i['max']}{extra}")
        for warning in d.get("warnings", []):
            print(f"  note: {warning}")
    else:
        print(f"  format {d['format']}, {d['images']} image(s), {d['boxes']} box(es), "
              f"{d['images_missing']} image file(s) not found")
        for name, count in d["counts"].items():
            print(f"  {name}: {count}")
        for warning in d["warnings"]:
            print(f"  note: {warning}")


def _run_info(args: argparse.Namespace) -> int:
    from ..core.info import describe

    d = describe(args.path)
    if args.json:
        print(json.dumps(json_ready(d), allow_nan=False))
    else:
        _print_info(d)
    return 0


def register_info(sub) -> None:
    p = sub.add_parser("info", help="what the readers see in an image, volume or annotation set")
    p.add_argument("path", type=Path)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=_run_info)


# -------------------------------------------------------------------------------------------------- convert


def _run_convert(args: argparse.Namespace) -> int:
    from ..core.convert import convert_annotations
    from ..core.io.formats import read_annotations
    from ..core.progress import drain

    aset = read_annotations(args.src)
    for warning in aset.warnings:
        print(f"note: {warning}", file=sys.stderr)
    drain(convert_annotations(aset, args.out, args.to, images=args.images), _progress("convert", args.quiet))
    print(f"wrote {len(aset.images)} image(s), {aset.n_boxes} box(es), {len(aset.classes)} class(es) "
          f"as {args.to} to {args.out}")
    return 0


def register_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert an annotated dataset between VOC, COCO and YOLO")
    p.add_argument("src", type=Path, help="a VOC folder or XML, a COCO JSON, a YOLO folder/data.yaml, or a box CSV")
    p.add_argument("--to", required=True, choices=("coco", "voc", "yolo"))
    p.add_argument("--out", required=True, type=Path, help="new (or empty) output folder")
    p.add_argument("--images", default="copy", choices=("copy", "reference"),
                   help="copy the images into the output (default) or reference the originals (COCO/VOC)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_run_convert)


# --------------------------------------------------------------------------------------------------- sample


def _run_sample(args: argparse.Namespace) -> int:
    from ..core.progress import drain
    from ..core.synthetic.samples import write_samples

    drain(write_samples(args.kind, args.out, seed=args.seed, count=args.count), _progress("sample", args.quiet))
    print(f"wrote {args.count} synthetic {args.kind} sample(s) (seed {args.seed}) to {args.out}")
    return 0


def register_sample(sub) -> None:
    p = sub.add_parser("sample", help="write synthetic smears or MRI volumes with exact ground truth")
    p.add_argument("kind", choices=("smear", "mri"))
    p.add_argument("--out", required=True, type=Path, help="new (or empty) output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_run_sample)


# ----------------------------------------------------------------------------------------------------- view


def _run_view(args: argparse.Namespace) -> int:
    from ..core.errors import BloodcellInputError

    _prefer_qt6()
    try:
        import napari
    except ImportError as exc:  # pragma: no cover - napari is a dependency
        raise BloodcellInputError(f"napari is not installed ({exc}); pip install 'napari-bloodcell[all]'") from exc
    viewer = napari.Viewer(title="napari-bloodcell")
    if args.sample:
        viewer.open_sample("napari-bloodcell", args.sample)
    for path in args.paths:
        if not Path(path).exists():
            raise BloodcellInputError("no such file or folder", path)
        viewer.open(str(path), plugin="napari-bloodcell")
    if args.review:
        _dock_review(napari, viewer, args)
    if args.screenshot:
        viewer.window._qt_window.resize(1400, 900)
        napari.qt.get_qapp().processEvents()
        viewer.reset_view()
        napari.qt.get_qapp().processEvents()
        viewer.screenshot(str(args.screenshot), canvas_only=False)
        viewer.close()
        print(f"saved {args.screenshot}")
        return 0
    napari.run()
    return 0


def _prefer_qt6() -> None:
    """PyQt6 when it is installed and no binding was chosen (``QT_API``): napari 0.9 shows a deprecation pop-up
    and Qt6-theme warnings at every start under PyQt5. PyQt5 stays supported; its theme warnings are silenced."""
    import importlib.util
    import os
    import warnings

    if "QT_API" not in os.environ and importlib.util.find_spec("PyQt6") is not None:
        os.environ["QT_API"] = "pyqt6"
    warnings.filterwarnings("ignore", "System theme detection requires a Qt6 backend")


def register_view(sub) -> None:
    p = sub.add_parser("view", help="open napari with the plugin's readers on PATHs or a sample")
    p.add_argument("paths", nargs="*", type=Path)
    p.add_argument("--sample", choices=("smear", "mri"), help="open one of the plugin's samples")
    p.add_argument("--screenshot", type=Path, help="save a window screenshot to this PNG and exit")
    p.add_argument("--review", action="store_true",
                   help="dock Detect cells and Review cells, detect the image and start its review")
    p.add_argument("--reviewer", help="with --review: your name (else asked once, and remembered)")
    p.add_argument("--project", type=Path, help="with --review: the review project folder")
    p.set_defaults(run=_run_view)


def _dock_review(napari, viewer, args: argparse.Namespace) -> None:
    """Dock Detect cells and Review cells through napari's plugin menu (as a user would) and start the review
    of the last image: *detect now* with the active detector, or restore its saved review."""
    import getpass
    import time

    viewer.window.add_plugin_dock_widget("napari-bloodcell", "Detect cells")
    _, review = viewer.window.add_plugin_dock_widget("napari-bloodcell", "Review cells", tabify=True)
    for layer in viewer.layers:  # the sample's ground truth stays available, out of the way
        if layer._type_string == "shapes":
            layer.visible = False
    reviewer = args.reviewer or (getpass.getuser() if args.screenshot else "")
    napari.qt.get_qapp().processEvents()
    review.fit_laptop_screen()  # the canvas keeps more than half of a 1366-px laptop screen
    review.detect_and_start(reviewer=reviewer, project=args.project)
    if args.screenshot:  # headless: wait for the detection so the picture shows the review
        app, end = napari.qt.get_qapp(), time.monotonic() + 300
        while review.worker is not None and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.02)


def _run_pyramid(args: argparse.Namespace) -> int:
    from ..core.io.pyramid_write import write_pyramid

    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(desc="pyramid tile rows", file=sys.stderr, leave=False)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    try:
        write_pyramid(args.src, args.out, args.tile, progress)
    finally:
        if bar is not None:
            bar.close()
    print(f"wrote {args.out}")
    return 0


def register_pyramid(sub) -> None:
    p = sub.add_parser("pyramid", help="convert a large image to a tiled pyramidal OME-TIFF (opens lazily, "
                       "multiscale in napari; detect reads it tile by tile)")
    p.add_argument("src", type=Path, help="any image the plugin reads (JPEG and PNG are decoded whole once)")
    p.add_argument("out", type=Path, help="OUT.ome.tif to create (never overwritten)")
    p.add_argument("--tile", type=int, default=512, help="tile side in pixels, a multiple of 16 (default 512)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=_run_pyramid)


REGISTRY = (register_info, register_convert, register_sample, register_view, register_pyramid)
