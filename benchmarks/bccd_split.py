"""Print the image paths of the fixed BCCD benchmark split (the same stable hash split `--val-fraction 0.2` uses).

    python benchmarks/bccd_split.py val [--root ../shared/data/bccd]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_bloodcell.core.datasets.detection import is_validation


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("part", choices=("train", "val", "all"))
    parser.add_argument("--root", type=Path, default=Path("../shared/data/bccd"))
    parser.add_argument("--fraction", type=float, default=0.2)
    args = parser.parse_args()
    images = sorted((args.root / "JPEGImages").glob("*.jpg"))
    annotated = {p.stem for p in (args.root / "Annotations").glob("*.xml")}
    for path in images:
        if path.stem not in annotated:
            continue
        val = is_validation(path.name, args.fraction)
        if args.part == "all" or (args.part == "val") == val:
            print(path)


if __name__ == "__main__":
    main()
