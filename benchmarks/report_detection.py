"""Markdown table rows from the `*.eval.json` files that detection_bccd.sh writes (for docs/benchmarks.md).

    .venv/bin/python benchmarks/report_detection.py benchmarks/results/detection
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/detection")
    print("| run | GT boxes | WBC AP50 | RBC AP50 | Platelets AP50 | mAP@0.5 | COCO mAP |")
    print("|---|---|---|---|---|---|---|")
    for path in sorted(folder.glob("*.eval.json")):
        d = json.loads(path.read_text())
        pc = d["per_class"]
        n = {k: v["n_gt"] for k, v in pc.items()}
        cells = " | ".join(f"{pc[c]['AP50']:.3f}" if c in pc else "—" for c in ("WBC", "RBC", "Platelets"))
        print(f"| {path.name.removesuffix('.eval.json')} | {sum(n.values())} | {cells} | "
              f"{d['mAP50']:.3f} | {d['mAP']:.3f} |")


if __name__ == "__main__":
    main()
