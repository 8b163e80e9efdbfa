"""Peak memory and time of opening and detecting a synthetic 40,000×40,000 whole-slide OME-TIFF (issue 18).

The slide is written here, never committed: a pyramidal, tiled (512×512, zlib) RGB OME-TIFF whose level 0 repeats
a 2048×2048 field of the synthetic smear generator (``napari_bloodcell.core.synthetic``) with a period of 4×4
tiles, and whose reduced levels (÷2 … ÷32) are that field block-averaged and repeated the same way, so every level
is exactly level 0 reduced. Each distinct tile is compressed once; the tiles that repeat it point at the same bytes
(the TIFF's tile offsets are rewritten after writing), so the file is about 20 MB rather than gigabytes.

Each phase runs in a fresh process and reports its peak resident memory (``ru_maxrss``) and time:

* ``baseline``: Python with the pyramid and detection modules, torch and torchvision imported, nothing read;
* ``open``: :func:`open_pyramid` (metadata of all six levels);
* ``region``: one 2048×2048 region of level 0;
* ``overview``: the whole smallest level (1250×1250);
* ``detect-null``: the same tiling as ``detect`` (575-pixel tiles, the starter's native size, 143 overlap) with a
  predictor that finds nothing: every tile of level 0 read and handed over, the reading machinery alone;
* ``detect``: :func:`detect_files` on the slide with the bundled starter detector (``load_predictor("auto")``):
  every tile of level 0, with per-tile progress written to ``--log`` every ``--log-every`` tiles;
  ``--max-tiles N`` stops after N tiles by closing the generator (what Cancel does).

    python benchmarks/slide_scale.py --out /tmp/slide [--side 40000] [--phases ...] [--json results.json]
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
PHASES = ("write", "baseline", "open", "region", "overview", "detect-null", "detect")
TILE = 512
PERIOD = 2048


def _period_field(seed: int = 7):
    from napari_bloodcell.core.synthetic.smear import generate_smear

    return generate_smear(seed=seed, width=PERIOD, height=PERIOD).image


def _reduce(field, factor: int):
    import numpy as np

    if factor == 1:
        return field
    h, w = field.shape[0] // factor, field.shape[1] // factor
    return field.reshape(h, factor, w, factor, 3).mean(axis=(1, 3)).round().astype(np.uint8)


def level_shapes(side: int, smallest: int = 1024) -> list[int]:
    sides = [side]
    while sides[-1] // 2 >= smallest:
        sides.append(sides[-1] // 2)
    return sides


def write_slide(path: Path, side: int) -> dict:
    """The pyramidal OME-TIFF described above; returns its levels and size."""
    import numpy as np
    import tifffile

    field = _period_field()
    sides = level_shapes(side)
    distinct_per_level, plans = [], []
    for k, s in enumerate(sides):
        factor = 2 ** k
        if side % factor:
            raise SystemExit(f"--side must be divisible by {factor}")
        small = _reduce(field, factor)
        reps = max(1, TILE // small.shape[0])
        period = np.tile(small, (reps, reps, 1))  # at least one tile wide, still periodic
        n = period.shape[0] // TILE
        tiles = [[zlib.compress(np.ascontiguousarray(period[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE])
                                .tobytes(), 6) for c in range(n)] for r in range(n)]
        rows = cols = -(-s // TILE)
        order = [(r % n, c % n) for r in range(rows) for c in range(cols)]
        plans.append((s, tiles, order, n))
        distinct_per_level.append(n * n)

    def segments(tiles, order):
        seen = set()
        for key in order:  # a repeat is written empty; its offset is pointed at the first copy below
            yield b"" if key in seen else tiles[key[0]][key[1]]
            seen.add(key)

    tmp = path.with_name(path.name + ".part")
    with tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tw:
        s, tiles, order, _ = plans[0]
        kw = {"tile": (TILE, TILE), "compression": "zlib", "photometric": "rgb", "dtype": np.uint8}
        tw.write(segments(tiles, order), shape=(s, s, 3), subifds=len(plans) - 1, **kw)
        for s, tiles, order, _ in plans[1:]:
            tw.write(segments(tiles, order), shape=(s, s, 3), subfiletype=1, **kw)
    with tifffile.TiffFile(tmp, mode="r+") as tif:
        pages = [level.keyframe for level in tif.series[0].levels]
        for page, (_, _, order, _) in zip(pages, plans):
            offsets = list(page.dataoffsets)
            counts = list(page.databytecounts)
            first: dict[tuple[int, int], int] = {}
            for i, key in enumerate(order):
                if key in first:
                    offsets[i], counts[i] = offsets[first[key]], counts[first[key]]
                else:
                    first[key] = i
            page.tags["TileOffsets"].overwrite(offsets)
            page.tags["TileByteCounts"].overwrite(counts)
    tmp.replace(path)
    return {"levels": sides, "distinct_tiles": distinct_per_level, "file_mb": round(path.stat().st_size / 1e6, 1)}


def run_phase(phase: str, slide: Path, args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    extra: dict = {}
    if phase == "write":
        extra.update(write_slide(slide, args.side))
    elif phase == "baseline":
        import torchvision.ops  # noqa: F401 - what detection imports

        from napari_bloodcell.core.inference import detect  # noqa: F401
        from napari_bloodcell.core.io import pyramid  # noqa: F401
    elif phase == "open":
        from napari_bloodcell.core.io.pyramid import open_pyramid

        with open_pyramid(slide) as p:
            extra["levels"] = [list(lv.shape) for lv in p.levels]
    elif phase == "region":
        from napari_bloodcell.core.io.pyramid import open_pyramid

        with open_pyramid(slide) as p:
            c = args.side // 2
            extra["mean"] = round(float(p.levels[0].read(c, c + 2048, c, c + 2048).mean()), 3)
    elif phase == "overview":
        from napari_bloodcell.core.io.pyramid import open_pyramid

        with open_pyramid(slide) as p:
            small = p.levels[-1]
            extra["shape"] = list(small.read(0, small.height, 0, small.width).shape)
    elif phase in ("detect", "detect-null"):
        extra.update(_detect(slide, args, null=phase == "detect-null"))
    extra["seconds"] = round(time.perf_counter() - t0, 1)
    return {"phase": phase, **extra, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


class NullPredictor:
    """The starter detector's tiling with no detection: measures reading and tiling alone."""

    classes = ["WBC", "RBC", "Platelets"]
    model_id = label = "null (finds nothing)"
    native_size = 575
    batch_size = 4

    def predict(self, tiles, score, nms_iou):
        import numpy as np

        return [(np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros(0)) for _ in tiles]


def _detect(slide: Path, args: argparse.Namespace, null: bool = False) -> dict:
    from napari_bloodcell.core.inference.detect import detect_files, load_predictor
    from napari_bloodcell.core.progress import Progress

    predictor = NullPredictor() if null else load_predictor("auto", "cpu")
    job = detect_files(predictor, [slide])
    log = open(args.log, "a") if args.log else None
    t0 = time.perf_counter()
    tiles = total = logged = 0
    result = None
    import signal

    def stop(*_):  # `kill -TERM` at a deadline: stop like Cancel and still report
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            item = next(job)
            if isinstance(item, Progress) and item.stage == "tiles":
                tiles, total = item.step, item.total
                if log and (tiles // args.log_every > logged // args.log_every or tiles == total):
                    logged = tiles
                    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                    log.write(f"{time.perf_counter() - t0:8.1f} s  tile {tiles}/{total}  peak {rss:.0f} MB\n")
                    log.flush()
                if args.max_tiles and tiles >= args.max_tiles:
                    job.close()  # what Cancel does
                    break
    except StopIteration as done:
        result = done.value
    except KeyboardInterrupt:
        job.close()
    out = {"model": predictor.label, "native_size": predictor.native_size, "tiles": f"{tiles}/{total}"}
    if result is not None:
        rec = result.images[0]
        out["cells"] = len(rec)
        out["by_class"] = {name: int((rec.labels == i).sum()) for i, name in enumerate(result.classes)}
    else:
        out["cancelled_after_tiles"] = tiles
    out["detect_seconds"] = round(time.perf_counter() - t0, 1)
    out["seconds_per_tile"] = round(out["detect_seconds"] / max(tiles, 1), 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the slide (never commit it)")
    parser.add_argument("--side", type=int, default=40000)
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    parser.add_argument("--max-tiles", type=int, default=0, help="detect: stop after this many tiles (0: all)")
    parser.add_argument("--log", type=Path, help="detect: append tile progress here")
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write the results here (a JSON list)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)  # a child process runs one phase
    args = parser.parse_args()
    slide = args.out / f"slide_{args.side}.ome.tif"
    if args.phase:
        print(json.dumps(run_phase(args.phase, slide, args)))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for phase in args.phases:
        if phase == "write" and slide.exists():
            continue
        cmd = [sys.executable, __file__, "--out", str(args.out), "--side", str(args.side), "--phase", phase,
               "--max-tiles", str(args.max_tiles), "--log-every", str(args.log_every)]
        if args.log:
            cmd += ["--log", str(args.log)]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        lines = [line for line in out.stdout.splitlines() if line.startswith('{"phase"')]
        row = json.loads(lines[-1]) if lines else {"phase": phase, "failed": out.stderr.strip()[-800:]}
        results.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            from napari_bloodcell.core.atomic import atomic_write_text

            atomic_write_text(args.json, json.dumps({"side": args.side, "slide": slide.name, "results": results},
                                                    indent=1) + "\n", exist="replace")
    return 0


if __name__ == "__main__":
    sys.exit(main())
