"""Red-cell morphology on Chula RBC-12: points -> grown boxes -> crops -> classifier, split by image.

    # 1. grow a box per point in every field, measure the boxes, cache them (about 1-2 minutes)
    python benchmarks/chula_morphology.py grow --data ../shared/data/chula_rbc12 --cache /tmp/chula_boxes.npz
    # 2. train (a) 13 exclusive types and (b) paper 001's multi-label heads + gradient-boosting screen
    python benchmarks/chula_morphology.py train --variant exclusive --cache /tmp/chula_boxes.npz \\
        --checkpoint /work/chula_models/chula_exclusive.pt
    python benchmarks/chula_morphology.py train --variant multilabel --cache /tmp/chula_boxes.npz \\
        --checkpoint /work/chula_models/chula_multilabel.pt
    # 3. the markdown table of benchmarks/results/chula_morphology_*.json
    python benchmarks/chula_morphology.py report

The split is by image (cells of one photo share stain and focus): fold 0 of a 5-fold StratifiedGroupKFold over the
cells' types, grouped by photo, seed 0, so about 20% of the photos, with every type present, are validation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TYPES = ["normal", "macrocyte", "microcyte", "spherocyte", "target cell", "stomatocyte", "ovalocyte", "teardrop",
         "burr cell", "schistocyte", "uncategorised", "hypochromia", "elliptocyte"]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "chula_rbc12"


def read_points(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``x y type`` lines -> (N, 2) float points and (N,) int64 types; anything else is an error naming the file."""
    from napari_bloodcell.core.errors import BloodcellInputError
    from napari_bloodcell.core.untrusted import read_text

    pts, types = [], []
    for k, line in enumerate(read_text(path).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            x, y, t = float(parts[0]), float(parts[1]), int(parts[2])
        except (ValueError, IndexError):
            raise BloodcellInputError(f"line {k} is not 'x y type': {line[:60]!r}", path) from None
        if len(parts) != 3 or not (np.isfinite(x) and np.isfinite(y)) or not 0 <= t < len(TYPES):
            raise BloodcellInputError(f"line {k} is not 'x y type' with type 0..{len(TYPES) - 1}: {line[:60]!r}",
                                      path)
        pts.append((x, y))
        types.append(t)
    return np.array(pts, np.float64).reshape(-1, 2), np.array(types, np.int64)


def grow(args) -> None:
    """Grow every field's boxes, cache them, and record how plausible they are."""
    from napari_bloodcell.core.io.images import read_image
    from napari_bloodcell.core.point_cells import grow_boxes_report

    data = Path(args.data)
    stems = sorted((p.stem for p in (data / "Label").glob("*.txt")), key=lambda s: (len(s), s))
    rows, seconds, n_fields = [], [], 0
    for stem in stems[: args.limit or None]:
        image_path = data / "Dataset" / f"{stem}.jpg"
        pts, types = read_points(data / "Label" / f"{stem}.txt")
        if not len(pts) or not image_path.is_file():
            continue
        img = read_image(image_path)
        t0 = time.perf_counter()
        boxes, fell_back = grow_boxes_report(img, pts)
        seconds.append(time.perf_counter() - t0)
        n_fields += 1
        for p, t, b, f in zip(pts, types, boxes, fell_back):
            rows.append((int(stem), *p, t, *b, f))
    arr = np.array(rows, np.float64)
    np.savez_compressed(args.cache, rows=arr, data=str(data))
    side = np.sqrt((arr[:, 6] - arr[:, 4]) * (arr[:, 7] - arr[:, 5]))
    med = float(np.median(side))
    contains = ((arr[:, 1] >= arr[:, 4]) & (arr[:, 1] <= arr[:, 6]) & (arr[:, 2] >= arr[:, 5])
                & (arr[:, 2] <= arr[:, 7]))
    stats = {
        "fields": n_fields, "points": len(arr), "seconds_per_field_median": float(np.median(seconds)),
        "seconds_per_field_max": float(np.max(seconds)), "median_side_px": med,
        "fallback_fraction": float(arr[:, 8].mean()),
        "plausible_fraction": float(((side > 0.5 * med) & (side < 1.6 * med)).mean()),
        "contains_point_fraction": float(contains.mean()),
        "median_side_by_type": {TYPES[t]: float(np.median(side[arr[:, 3] == t])) for t in range(len(TYPES))
                                if (arr[:, 3] == t).any()},
        "count_by_type": {TYPES[t]: int((arr[:, 3] == t).sum()) for t in range(len(TYPES))},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "chula_grow_boxes.json").write_text(json.dumps(stats, indent=1))
    print(json.dumps(stats, indent=1))


def sample_sets(cache: Path, multilabel: bool, max_photos: int = 0):
    """All cells as a SampleSet (group = photo), and the by-image train/validation split."""
    from napari_bloodcell.core.datasets.classification import Sample, SampleSet, stratified_group_folds

    got = np.load(cache)
    rows, data = got["rows"], Path(str(got["data"]))
    if max_photos:  # a smoke test: every k-th photo
        photos = np.unique(rows[:, 0])
        rows = rows[np.isin(rows[:, 0], photos[:: max(1, len(photos) // max_photos)])]
    samples = []
    for stem, x, y, t, x1, y1, x2, y2, fell in rows:
        t = int(t)
        target = np.eye(len(TYPES), dtype=np.float32)[t] if multilabel else t
        samples.append(Sample(data / "Dataset" / f"{int(stem)}.jpg", np.array([x1, y1, x2, y2]), target,
                              str(int(stem)), {"point": [x, y], "fallback": bool(fell)}))
    sset = SampleSet(list(TYPES), samples, multilabel, f"chula_rbc12 grown boxes ({cache.name})")
    exclusive = dataclasses.replace(sset, multilabel=False, samples=[
        dataclasses.replace(s, target=int(np.argmax(s.target)) if multilabel else s.target) for s in samples])
    train_idx, val_idx = stratified_group_folds(exclusive, 5, seed=0)[0]
    return sset.subset(train_idx), sset.subset(val_idx)


def train(args) -> None:
    import torch

    from napari_bloodcell.core.classification_metrics import classification_report, screen_report
    from napari_bloodcell.core.inference.classify import to_probabilities
    from napari_bloodcell.core.training.classification import ClassifierTrainConfig, train_classifier

    torch.set_num_threads(args.threads)
    multilabel = args.variant == "multilabel"
    train_set, val_set = sample_sets(Path(args.cache), multilabel, args.max_photos)
    print(f"train {len(train_set)} cells / {len(set(train_set.groups()))} photos; "
          f"val {len(val_set)} cells / {len(set(val_set.groups()))} photos", flush=True)
    Path(args.checkpoint).parent.mkdir(parents=True, exist_ok=True)
    cfg = ClassifierTrainConfig(
        arch=args.arch, out=args.checkpoint, multilabel=multilabel, optimizer="adam", lr=args.lr,
        epochs=args.epochs, batch=args.batch, patience=args.epochs, balance="weights" if multilabel else args.balance,
        augment=True, input_size=args.size, weights="none", device="cpu", seed=args.seed,
        max_iters_per_epoch=args.iters, screen_normal=["normal"] if multilabel else None,
        command=" ".join(sys.argv), train_samples=train_set, val_samples=val_set)
    t0 = time.perf_counter()
    gen = train_classifier(cfg)
    try:
        while True:
            ev = next(gen)
            if ev.kind in ("val", "stopped", "message") or (ev.kind == "train" and ev.step % 50 == 0):
                print(f"{time.perf_counter() - t0:7.0f}s {ev.kind} {ev.step}/{ev.total} epoch {ev.epoch} "
                      f"{ {k: round(v, 4) for k, v in ev.metrics.items() if isinstance(v, float)} }", flush=True)
    except StopIteration as stop:
        result = stop.value
    scores, y = result["val_scores"], np.array([int(np.argmax(s.target)) if multilabel else int(s.target)
                                                for s in val_set.samples])
    probs = to_probabilities(scores, "sigmoid" if multilabel else "softmax")
    exclusive = classification_report(y, probs, list(TYPES))  # multi-label: the type is the highest head
    out = {"variant": args.variant, "arch": args.arch, "input_size": args.size, "epochs": args.epochs,
           "iters_per_epoch": args.iters, "batch": args.batch, "lr": args.lr, "balance": cfg.balance,
           "initial_weights": "none (random)", "augment": True, "seed": args.seed, "threads": args.threads,
           "command": " ".join(sys.argv), "checkpoint": str(args.checkpoint),
           "minutes": (time.perf_counter() - t0) / 60, "best_epoch": result["best_epoch"],
           "history": result["history"], "n_train": result["n_train"], "n_val": result["n_val"],
           "val_photos": sorted(set(val_set.groups().tolist()), key=int),
           "exclusive_report": exclusive}
    abnormal = y != 0
    if multilabel:
        out["multilabel_report"] = {k: v for k, v in result["report"].items() if k != "screen"}
        out["screen"] = result["report"]["screen"]
    else:  # the exclusive model's own screen: P(abnormal) = 1 - P(normal)
        out["screen"] = screen_report(abnormal, 1.0 - probs[:, 0])
    out["screen_definition"] = "abnormal = any type other than 'normal' (uncategorised counts as abnormal)"
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"chula_morphology_{args.name or args.variant}.json"
    path.write_text(json.dumps(out, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    print(f"wrote {path}; accuracy {exclusive['accuracy']['value']:.3f} macro-F1 {exclusive['macro_f1']:.3f} "
          f"screen AUC {out['screen']['auc']['value']:.3f}")


def _ci(d: dict) -> str:
    lo, hi = d["ci95"]
    return f"{d['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def report(args) -> None:
    order = {"exclusive": 0, "multilabel": 1}
    paths = sorted(RESULTS.glob("chula_morphology_*.json"),
                   key=lambda p: (order.get(p.stem[len("chula_morphology_"):], 2), p.stem))
    runs = {p.stem[len("chula_morphology_"):]: json.loads(p.read_text()) for p in paths}
    if not runs:
        sys.exit("no results yet")
    names = list(runs)
    print("| type | val cells | " + " | ".join(f"recall, {n} [95% CI]" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    first = runs[names[0]]["exclusive_report"]["per_class"]
    for t in TYPES:
        cells = [_ci(runs[n]["exclusive_report"]["per_class"][t]["recall"]) for n in names]
        print(f"| {t} | {first[t]['support']} | " + " | ".join(cells) + " |")
    for label, get in (("accuracy", lambda r: _ci(r["exclusive_report"]["accuracy"])),
                       ("macro-F1", lambda r: f"{r['exclusive_report']['macro_f1']:.3f}"),
                       ("kappa", lambda r: _ci(r["exclusive_report"]["kappa"])),
                       ("abnormal screen AUC", lambda r: _ci(r["screen"]["auc"])),
                       ("screen sensitivity / specificity at 0.5",
                        lambda r: f"{r['screen']['sensitivity']['value']:.3f} / "
                                  f"{r['screen']['specificity']['value']:.3f}"),
                       ("epochs x steps x batch", lambda r: f"{r['epochs']} x {r['iters_per_epoch']} x {r['batch']}"),
                       ("best epoch", lambda r: str(r["best_epoch"])),
                       ("minutes (2-core CPU)", lambda r: f"{r['minutes']:.0f}")):
        print(f"| **{label}** | | " + " | ".join(get(runs[n]) for n in names) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    g = sub.add_parser("grow")
    g.add_argument("--data", default=str(DEFAULT_DATA))
    g.add_argument("--cache", default="/tmp/chula_boxes.npz")
    g.add_argument("--limit", type=int, default=0, help="only the first N photos (a smoke test)")
    t = sub.add_parser("train")
    t.add_argument("--variant", choices=("exclusive", "multilabel"), required=True)
    t.add_argument("--cache", default="/tmp/chula_boxes.npz")
    t.add_argument("--checkpoint", required=True)
    t.add_argument("--arch", default="resnet18")
    t.add_argument("--size", type=int, default=48)
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--iters", type=int, default=160, help="optimiser steps per epoch")
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--balance", choices=("weights", "sampler", "none"), default="sampler")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--name", default="", help="results file suffix (default: the variant)")
    t.add_argument("--max-photos", type=int, default=0, help="a smoke test on about N photos")
    t.add_argument("--results", default=str(RESULTS), help="folder for the results JSON")
    sub.add_parser("report")
    args = parser.parse_args()
    {"grow": grow, "train": train, "report": report}[args.verb](args)


if __name__ == "__main__":
    main()
