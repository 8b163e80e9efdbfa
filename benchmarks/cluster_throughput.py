"""Throughput of ``bloodcell detect`` on an archive: one process, and a local Dask cluster of 1 and 2 workers.

    python benchmarks/cluster_throughput.py --images ../shared/data/bccd/JPEGImages --count 96 \
        [--workers 1 2] [--model auto] [--out benchmarks/results/cluster_throughput.json]

Each configuration runs the real command in a fresh process (``python -m napari_bloodcell.cli.main detect``) on
the same ``--count`` images (the folder's first images, sorted) and reports wall seconds and images per second,
both end to end (process start, imports, cluster start, model loads included) and for the images alone: the
steady rate is the end-to-end time minus that of a run on ``--warm`` images, which pays the same start-up. Every worker
runs one thread (Dask sets OMP_NUM_THREADS=1), while the one-process run uses torch's default of all cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(images: Path, out: Path, model: str, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "napari_bloodcell.cli.main", "detect", str(images), "--out", str(out), "--model",
           model, "--device", "cpu", "--quiet", *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.strip()[-400:]}")
    return wall


def subset(source: Path, count: int, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif", ".tiff"))
    if not files:
        raise SystemExit(f"{source}: no images")
    for k in range(count):
        src = files[k % len(files)]
        (folder / f"{k:05d}_{src.name}").symlink_to(src.resolve())
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--count", type=int, default=96)
    ap.add_argument("--warm", type=int, default=4, help="images of the start-up run subtracted for the steady rate")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--model", default="auto")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        big, small = subset(args.images, args.count, tmp / "big"), subset(args.images, args.warm, tmp / "small")
        for label, extra in [("one process", [])] + [(f"{n} worker(s)", ["--workers", str(n)]) for n in args.workers]:
            startup = run(small, tmp / f"s{len(rows)}.json", args.model, extra)
            wall = run(big, tmp / f"b{len(rows)}.json", args.model, extra)
            steady = (wall - startup) / max(1, args.count - args.warm)
            rows.append({"config": label, "images": args.count, "wall_s": round(wall, 2),
                         "images_per_s": round(args.count / wall, 3), "startup_run_s": round(startup, 2),
                         "steady_s_per_image": round(steady, 4),
                         "steady_images_per_s": round(1 / steady, 3) if steady > 0 else None})
            print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(tmp / "big.parts", ignore_errors=True)
    result = {"command": " ".join(sys.argv), "cpu_count": os.cpu_count(), "model": args.model, "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
