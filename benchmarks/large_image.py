"""Peak memory of reading and detecting a 20000×20000 scan (issue 13: large images are a feature, not an attack).

Writes a SIDE×SIDE RGB tiled TIFF (zlib, tiles of 240×320 cut from the synthetic smear and repeated, so the file
is a few MB), then runs each phase in a fresh process and reports that process's peak resident memory
(``ru_maxrss``) and time:

* ``baseline``: Python with numpy, tifffile and the image and detection modules imported, nothing read;
* ``baseline-torch``: the same plus torch, torchvision (NMS), SciPy and scikit-image, which the classical detector
  and the ``bloodcell`` command line import (torch alone is about 690 MB of this);
* ``describe``: what ``bloodcell info`` computes (``core.info.describe``: header only);
* ``info``: ``bloodcell info scan.tif --json`` itself, command-line imports included;
* ``whole``: ``read_image`` (the whole image decoded, which is what ``info`` and ``detect`` did before);
* ``region``: one 1536×1536 region read from the lazy image;
* ``detect-null``: ``detect_array`` over the whole lazy image with the classical detector's tiling (1536 px, 384
  overlap) and a predictor that returns no boxes, so every tile of the image is read and handed over: the memory
  of the reading and tiling machinery alone, over all of it;
* ``detect-classical``: the classical detector on the first ``--classical-tiles`` tiles of that same run (its
  first band of tiles is read whole first). The classical detector needs minutes per 1536-pixel tile on 2 CPU
  cores, so all 324 tiles would take hours; since the field is read and detected one band at a time, its peak
  is reached on the first band and does not grow with the image.

    python benchmarks/large_image.py --out /tmp/large [--side 20000] [--classical-tiles 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHASES = ("baseline", "baseline-torch", "describe", "info", "whole", "region", "detect-null", "detect-classical")
TILE = (240, 320)


def write_scan(path: Path, side: int) -> None:
    """The smear's four 240×320 quarters repeated as TIFF tiles, each compressed once."""
    import numpy as np
    import tifffile

    from napari_bloodcell.core.io.images import read_image

    smear = read_image(REPO / "sample_data" / "smear" / "JPEGImages" / "smear_0000.png")
    th, tw = TILE
    quarters = [[zlib.compress(np.ascontiguousarray(smear[r * th:(r + 1) * th, c * tw:(c + 1) * tw]).tobytes())
                 for c in range(2)] for r in range(2)]
    rows, cols = -(-side // th), -(-side // tw)
    tiles = (quarters[r % 2][c % 2] for r in range(rows) for c in range(cols))
    tifffile.imwrite(path, tiles, shape=(side, side, 3), dtype=np.uint8, tile=TILE, compression="zlib",
                     photometric="rgb")


class NullPredictor:
    """The classical detector's tiling with no detection: measures reading and tiling alone."""

    classes = ["WBC", "RBC", "Platelets"]
    model_id = "null"
    native_size = 1536
    batch_size = 1

    def predict(self, tiles, score, nms_iou):
        import numpy as np

        return [(np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros(0)) for _ in tiles]


def run_phase(phase: str, scan: Path, classical_tiles: int) -> dict:
    import numpy as np

    from napari_bloodcell.core.inference.detect import ClassicalPredictor, detect_array
    from napari_bloodcell.core.io.images import open_image, read_image

    t0 = time.perf_counter()
    extra: dict = {}
    if phase == "baseline-torch":
        import scipy.ndimage  # noqa: F401 - what the detection phases import
        import skimage.filters  # noqa: F401
        import torchvision.ops  # noqa: F401
    elif phase == "describe":
        from napari_bloodcell.core.info import describe

        extra["shape"] = describe(scan)["shape"]
    elif phase == "info":
        from napari_bloodcell.cli.main import main

        extra["exit"] = main(["info", str(scan), "--json"])
    elif phase == "whole":
        extra["shape"] = list(read_image(scan).shape)
    elif phase == "region":
        with open_image(scan) as image:
            extra["mean"] = float(image.read(9000, 10536, 9000, 10536).mean())
    elif phase in ("detect-null", "detect-classical"):
        predictor = NullPredictor() if phase == "detect-null" else ClassicalPredictor()
        limit = None if phase == "detect-null" else classical_tiles
        with open_image(scan) as image:
            job = detect_array(predictor, image)
            done = total = 0
            try:
                while limit is None or done < limit:
                    done, total = next(job)
            except StopIteration as stop:
                extra["boxes"] = len(stop.value[0])
            job.close()
        extra["tiles"] = f"{done}/{total}"
    extra["seconds"] = round(time.perf_counter() - t0, 1)
    del np
    return {"phase": phase, **extra, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the scan TIFF")
    parser.add_argument("--side", type=int, default=20000)
    parser.add_argument("--classical-tiles", type=int, default=1)
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    parser.add_argument("--phase", help=argparse.SUPPRESS)  # a child process runs one phase
    args = parser.parse_args()
    scan = args.out / f"scan_{args.side}.tif"
    if args.phase:
        print(json.dumps(run_phase(args.phase, scan, args.classical_tiles)))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    if not scan.exists():
        write_scan(scan, args.side)
    print(json.dumps({"scan": str(scan), "side": args.side, "file_mb": round(scan.stat().st_size / 1e6, 2)}))
    for phase in args.phases:
        out = subprocess.run([sys.executable, __file__, "--out", str(args.out), "--side", str(args.side),
                              "--classical-tiles", str(args.classical_tiles), "--phase", phase],
                             capture_output=True, text=True, cwd=REPO)
        lines = [line for line in out.stdout.splitlines() if line.startswith('{"phase"')]
        print(lines[-1] if lines else json.dumps({"phase": phase, "failed": out.stderr.strip()[-500:]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
