"""Markdown tables of the WBC cross-validation reports in benchmarks/results/classification/*/report.json.

    python benchmarks/report_classification.py [FOLDER]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def num(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def ci(d: dict) -> str:
    lo, hi = d["ci95"]
    return f"{num(d['value'])} [{num(lo)}, {num(hi)}]"


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/classification")
    reports = sorted(folder.glob("*/report.json"))
    print("| recipe | accuracy [95% CI] | kappa [95% CI] | macro F1 | macro AUC | fold accuracies | minutes |")
    print("|---|---|---|---|---|---|---|")
    for path in reports:
        d = json.loads(path.read_text())
        r = d["report"]
        folds = ", ".join(f"{f['accuracy']:.2f}" for f in d["folds"])
        print(f"| {path.parent.name} | {ci(r['accuracy'])} | {ci(r['kappa'])} | {r['macro_f1']:.3f} | "
              f"{r['macro_auc']:.3f} | {folds} | {d['seconds'] / 60:.1f} |")
    print()
    print("| recipe | class | n | precision | recall (sensitivity) [95% CI] | specificity | F1 | AUC [95% CI] |")
    print("|---|---|---|---|---|---|---|---|")
    for path in reports:
        r = json.loads(path.read_text())["report"]
        for name, c in r["per_class"].items():
            print(f"| {path.parent.name} | {name} | {c['support']} | {num(c['precision']['value'])} | "
                  f"{ci(c['recall'])} | {num(c['specificity']['value'])} | {num(c['f1']['value'])} | {ci(c['auc'])} |")


if __name__ == "__main__":
    main()
