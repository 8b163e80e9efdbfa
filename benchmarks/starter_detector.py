"""The starter detector: trained on every public box-labelled smear set, measured in-lab and on labs it never saw.

Sources ("labs"), from ``../shared/data``:

- ``bccd``    BCCD's 640×480 photos (VOC), with TXL-PBC's re-annotation of the same photos where it has one (it
              marks the red cells BCCD missed); TXL's 640×480 and 416×416 copies are matched to their BCCD photo by
              thumbnail so one photo never sits on both sides of the split.
- ``pbc``     TXL-PBC's PBC (CellaVision) crops, 360×363 / 366×369.
- ``raabin``  TXL-PBC's Raabin-WBC crops, 575×575.
- ``aslan``   bcd_aslan, 13 crops of 256×256 from an unrelated lab: never trained on, scored as another lab.
- ``chula``   chula_rbc12 red-cell centre points: never trained on (white cells and platelets are unmarked there,
              so its photos would teach that they are background); scored as red-cell point recall.

Validation is the stable hash split (``is_validation``, 20%) of each lab, by BCCD photo name for the bccd lab.

    python benchmarks/starter_detector.py sources
    python benchmarks/starter_detector.py anchors
    python benchmarks/starter_detector.py train --out /work/starter/all.pt [--exclude raabin] [--epochs 24]
    python benchmarks/starter_detector.py evaluate --model M.pt --json OUT.json
    python benchmarks/starter_detector.py pack --model M.pt   # fp16, into napari_bloodcell/models/
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from napari_bloodcell.core.datasets.detection import is_validation
from napari_bloodcell.core.io.formats import read_annotations
from napari_bloodcell.core.io.images import read_image
from napari_bloodcell.core.io.records import AnnotationSet, ImageRecord

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLASSES = ["WBC", "RBC", "Platelets"]
LABS = ("bccd", "pbc", "raabin")
TXL_LAB = {(640, 480): "bccd", (416, 416): "bccd", (360, 363): "pbc", (366, 369): "pbc", (575, 575): "raabin"}


def _canonical(aset: AnnotationSet) -> list[ImageRecord]:
    """Records relabelled to CLASSES (WBC, RBC, Platelets) by name, case-insensitively."""
    index = {c.lower(): i for i, c in enumerate(CLASSES)}
    index.update({"platelet": 2, "plt": 2})
    mapping = np.array([index[c.lower()] for c in aset.classes])
    return [dataclasses.replace(r, labels=mapping[r.labels] if len(r) else r.labels) for r in aset.images]


def _thumb(path: Path) -> np.ndarray:
    from skimage.transform import resize

    img = read_image(path).astype(np.float32)
    grey = img.mean(-1) if img.ndim == 3 else img
    t = resize(grey, (24, 24), anti_aliasing=True)
    return (t - t.mean()) / (t.std() + 1e-6)


def gather(data: Path = DATA) -> dict[str, tuple[list[ImageRecord], list[ImageRecord]]]:
    """``lab -> (train records, validation records)`` for the trainable labs."""
    bccd = {Path(r.file_name).stem: r for r in _canonical(read_annotations(data / "bccd"))}
    txl = _canonical(read_annotations(data / "txl_pbc" / "data.yaml"))
    labs: dict[str, tuple[list, list]] = {lab: ([], []) for lab in LABS}
    names = sorted(bccd)
    thumbs = np.stack([_thumb(bccd[n].path) for n in names])
    replaced: dict[str, ImageRecord] = {}
    for rec in txl:
        lab = TXL_LAB.get((rec.width, rec.height))
        if lab is None:
            continue
        if lab == "bccd":  # the same photo as a BCCD one (some flipped or transposed): TXL's fuller boxes win
            t = _thumb(rec.path)
            d = np.min([((thumbs - v[None]) ** 2).mean((1, 2)) for v in (t, t[::-1], t[:, ::-1], t[::-1, ::-1], t.T)],
                       axis=0)
            j = int(np.argmin(d))
            if d[j] < 0.2:
                if names[j] not in replaced and d[j] < 0.01:  # same orientation: its boxes fit the BCCD photo
                    replaced[names[j]] = rec
                continue  # a second copy of the photo adds nothing and must not cross the split
        labs[lab][is_validation(rec.file_name, 0.2)].append(rec)
    labs["bccd_voc"] = ([], [])  # the same validation photos with BCCD's own boxes (about half the red cells)
    for name in names:
        rec = replaced.get(name, bccd[name])
        labs["bccd"][is_validation(name, 0.2)].append(rec)
        if is_validation(name, 0.2):
            labs["bccd_voc"][1].append(bccd[name])
    return labs


def aslan(data: Path = DATA) -> list[ImageRecord]:
    import csv

    folder = data / "bcd_aslan"
    rows: dict[str, list] = {}
    with open(folder / "annotations.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            rows.setdefault(row["image"], []).append(row)
    recs = []
    for name, items in sorted(rows.items()):
        path = folder / "images" / name
        h, w = read_image(path).shape[:2]
        boxes = np.array([[float(r["xmin"]) * w, float(r["ymin"]) * h, float(r["xmax"]) * w, float(r["ymax"]) * h]
                          for r in items])
        labels = np.array([CLASSES.index(r["label"].upper()) for r in items], dtype=np.int64)
        recs.append(ImageRecord(name, w, h, boxes, labels, path=path))
    return recs


def synthetic(folder: Path) -> list[ImageRecord]:
    """Smears written by ``bloodcell sample smear`` with their four white-cell types as WBC."""
    aset = read_annotations(folder)
    index = {c: CLASSES.index("WBC") for c in aset.classes}
    index.update({"RBC": CLASSES.index("RBC"), "Platelets": CLASSES.index("Platelets")})
    mapping = np.array([index[c] for c in aset.classes])
    return [dataclasses.replace(r, labels=mapping[r.labels]) for r in aset.images]


def cmd_sources(args) -> None:
    labs = gather()
    for lab, (tr, va) in labs.items():
        n = lambda rs, c: int(sum((r.labels == c).sum() for r in rs))  # noqa: E731
        print(f"{lab:8s} train {len(tr):4d} val {len(va):4d} | boxes train " +
              " ".join(f"{c} {n(tr, i)}" for i, c in enumerate(CLASSES)))
    print("aslan", len(aslan()), "images")


def cmd_anchors(args) -> None:
    """k-means (1 - IoU distance, as darknet) of the training boxes' sizes at a 416 input, six clusters, on an
    equal number of boxes per class: plain k-means gives every anchor to the red cells, none to the platelets."""
    wh: dict[int, list] = {c: [] for c in range(len(CLASSES))}
    labs = gather()
    for lab in LABS:
        for r in labs[lab][0]:
            for box, c in zip(r.boxes, r.labels):
                wh[int(c)].append((box[2:] - box[:2]) * np.array([416 / r.width, 416 / r.height]))
    rng = np.random.default_rng(0)
    n = min(len(v) for v in wh.values())
    sample = np.concatenate([np.array(v)[rng.choice(len(v), n, replace=False)] for v in wh.values()])
    centres = sample[rng.choice(len(sample), 6, replace=False)]
    for _ in range(200):
        inter = np.minimum(sample[:, None], centres[None]).prod(-1)
        iou = inter / (sample.prod(-1)[:, None] + centres.prod(-1)[None] - inter)
        assign = iou.argmax(1)
        centres = np.stack([np.median(sample[assign == k], 0) if (assign == k).any() else centres[k]
                            for k in range(6)])
    centres = centres[np.argsort(centres.prod(-1))]
    print(f"{n} boxes per class;", tuple(tuple(int(round(v)) for v in c) for c in centres),
          "mean best IoU", round(float(iou.max(1).mean()), 3))
    for c, v in wh.items():
        v = np.array(v)
        print(CLASSES[c], "median w,h", np.median(v, 0).round(1), "n", len(v))


def cmd_train(args) -> None:
    import torch

    from napari_bloodcell.core.training.detection import DetectorTrainConfig, train_detector

    torch.set_num_threads(args.threads)
    labs = gather()
    use = [lab for lab in LABS if lab not in args.exclude]
    train = [r for lab in use for r in labs[lab][0]]
    val = [r for lab in use for r in labs[lab][1]]
    if args.synthetic:  # the plugin's own smear generator (other seeds than the shipped samples): training only
        train += synthetic(Path(args.synthetic))
        use.append("synthetic")
    print(f"training on {use}: {len(train)} images, validating on {len(val)}", flush=True)
    cfg = DetectorTrainConfig(
        arch="yolov3_tiny", data=AnnotationSet(CLASSES, train, extra={"source": "+".join(use)}),
        val=AnnotationSet(CLASSES, val), out=args.out, epochs=args.epochs, batch=args.batch, lr=args.lr,
        optimizer="adamw", augment=args.augment, train_sizes=tuple(int(s) for s in args.sizes.split(",") if s),
        arch_args={"input_size": args.input_size}, resume=args.resume, keep_last=True, seed=args.seed,
        weights=args.weights, warmup_iters=args.warmup, command="python " + " ".join(sys.argv))
    gen = train_detector(cfg)
    t0 = time.time()
    try:
        while True:
            p = next(gen)
            if p.kind != "train" or p.step % 20 == 0 or p.metrics.get("mAP50") is not None:
                metrics = {k: round(v, 4) for k, v in p.metrics.items() if isinstance(v, float)}
                print(f"[{time.time() - t0:6.0f}s] {p.kind} e{p.epoch} {p.step}/{p.total} {p.message} {metrics}",
                      flush=True)
    except StopIteration as stop:
        print(json.dumps({k: v for k, v in stop.value.items() if k != "history"}, default=str), flush=True)


def _per_image(gt: AnnotationSet, pred: AnnotationSet, cls: int):
    from napari_bloodcell.core.metrics import match_class, pair

    p = pair(gt, pred, restrict_to_pred=False)
    out = []
    for i in range(len(p.gt)):
        one = dataclasses.replace(p, gt=[p.gt[i]], pred=[p.pred[i]], pred_labels=[p.pred_labels[i]])
        out.append(match_class(one, cls, 0.5))
    return out


def ap_with_interval(items, n_boot: int = 300, seed: int = 0) -> tuple[float, float, float]:
    """VOC AP@0.5 over images and its 95% percentile bootstrap interval (images resampled)."""
    from napari_bloodcell.core.metrics import pr_curve, voc_ap

    def ap(idx) -> float:
        s = np.concatenate([items[i][0] for i in idx])
        tp = np.concatenate([items[i][1] for i in idx]).astype(bool)
        n = sum(items[i][2] for i in idx)
        if not n:
            return float("nan")
        o = np.argsort(-s, kind="mergesort")
        return voc_ap(*pr_curve(tp[o], n))

    rng = np.random.default_rng(seed)
    point = ap(range(len(items)))
    boots = [ap(rng.integers(0, len(items), len(items))) for _ in range(n_boot)]
    lo, hi = np.nanpercentile(boots, [2.5, 97.5])
    return point, float(lo), float(hi)


def recall_at(items, score: float) -> tuple[int, int]:
    hits = sum(int(tp[s >= score].sum()) for s, tp, _ in items)
    return hits, sum(n for _, _, n in items)


def score_records(model_path: str, records: list[ImageRecord], classes_present=(0, 1, 2), score: float = 0.3):
    from napari_bloodcell.core.differential import exact_interval
    from napari_bloodcell.core.inference.detect import detections_record
    from napari_bloodcell.core.inference.detect import detect_array, load_predictor
    from napari_bloodcell.core.progress import drain

    predictor = load_predictor(model_path, batch_size=1)
    preds, times = [], []
    for rec in records:
        image = read_image(rec.path)
        t = time.perf_counter()
        dets = drain(detect_array(predictor, image, score=0.01, nms_iou=0.5, tile=0))
        times.append(time.perf_counter() - t)
        preds.append(detections_record(rec.file_name, rec.width, rec.height, dets, "m"))
    gt, pr = AnnotationSet(CLASSES, records), AnnotationSet(list(predictor.classes), preds)
    out = {"images": len(records), "ms_per_image": 1000 * float(np.median(times)), "per_class": {}}
    for c in classes_present:
        items = _per_image(gt, pr, c)
        ap, lo, hi = ap_with_interval(items)
        k, n = recall_at(items, score)
        rlo, rhi = (v / 100 for v in exact_interval(k, n))  # exact_interval is in percent
        out["per_class"][CLASSES[c]] = {"AP50": ap, "AP50_ci": [lo, hi], "n_gt": n,
                                        f"recall@{score}": k / n if n else float("nan"), "recall_ci": [rlo, rhi]}
    out["mAP50"] = float(np.nanmean([v["AP50"] for v in out["per_class"].values()]))
    return out, preds


def chula_point_recall(model_path: str, n_images: int = 120, score: float = 0.3) -> dict:
    """Share of Chula red-cell centre points that fall inside a predicted RBC box (one box per point)."""
    from napari_bloodcell.core.differential import exact_interval
    from napari_bloodcell.core.inference.detect import detect_array
    from napari_bloodcell.core.io.points import read_points
    from napari_bloodcell.core.inference.detect import load_predictor
    from napari_bloodcell.core.progress import drain

    folder = DATA / "chula_rbc12"
    photos = sorted((folder / "Dataset").glob("*.jpg"))[:: max(1, 470 // n_images)][:n_images]
    predictor = load_predictor(model_path, batch_size=1)
    rbc = list(predictor.classes).index("RBC")
    hit = total = boxes_without = n_boxes = 0
    for photo in photos:
        label = folder / "Label" / f"{photo.stem}.txt"
        if not label.is_file():
            continue
        image = read_image(photo)
        pset = read_points(label, images=folder / "Dataset")
        pts = pset.images[0].points if pset.images else np.zeros((0, 2))
        b, lab, s = drain(detect_array(predictor, image, score=score, nms_iou=0.5, tile=0))
        b = b[lab == rbc]
        inside = ((pts[:, None, 0] >= b[None, :, 0]) & (pts[:, None, 0] <= b[None, :, 2]) &
                  (pts[:, None, 1] >= b[None, :, 1]) & (pts[:, None, 1] <= b[None, :, 3]))
        taken = np.zeros(len(b), bool)
        centres = (b[:, :2] + b[:, 2:]) / 2
        for i in range(len(pts)):
            cand = np.flatnonzero(inside[i] & ~taken)
            if len(cand):
                j = cand[np.argmin(((centres[cand] - pts[i]) ** 2).sum(1))]
                taken[j] = True
                hit += 1
        total += len(pts)
        n_boxes += len(b)
        boxes_without += int((~inside.any(0)).sum()) if len(pts) else len(b)
    lo, hi = (v / 100 for v in exact_interval(hit, total))
    # Chula marks about 34 cells per photo, many photos hold far more: boxes without a point are not errors
    return {"photos": len(photos), "points": total, "point_recall": hit / max(total, 1), "ci": [lo, hi],
            "rbc_boxes": n_boxes, "boxes_without_a_point": boxes_without}


def cmd_evaluate(args) -> None:
    labs = gather()
    result = {"model": args.model, "labs": {}}
    for lab in (*LABS, "bccd_voc"):
        out, _ = score_records(args.model, labs[lab][1])
        result["labs"][lab] = out
        print(lab, json.dumps({k: round(v["AP50"], 3) for k, v in out["per_class"].items()}), flush=True)
    out, _ = score_records(args.model, aslan(), classes_present=(0, 1))
    result["labs"]["aslan"] = out
    print("aslan", json.dumps({k: round(v["AP50"], 3) for k, v in out["per_class"].items()}), flush=True)
    result["chula"] = chula_point_recall(args.model, args.chula)
    print("chula", result["chula"], flush=True)
    Path(args.json).write_text(json.dumps(result, indent=1, default=float) + "\n")


def cmd_pack(args) -> None:
    """The best epoch of a run as the shipped checkpoint: weights in fp16, no optimiser state, the measured
    figures of ``--eval`` in its card fields, and its SHA-256 in ``napari_bloodcell/models/bundled.json``."""
    from napari_bloodcell.core.models.bundled import MANIFEST, record_bundled
    from napari_bloodcell.core.models.checkpoints import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(args.model)
    keep = ("format", "version", "arch", "arch_args", "classes", "initial_weights", "data_hash", "data",
            "augment", "train_sizes", "val_metrics", "epoch", "image_size", "command", "created", "n_train", "n_val")
    packed = {k: ckpt[k] for k in keep if k in ckpt}
    packed["model"] = {k: (v.half() if v.is_floating_point() else v) for k, v in ckpt["model"].items()}
    packed["name"] = args.name
    packed["card"] = args.card
    MANIFEST.parent.mkdir(exist_ok=True)
    target = MANIFEST.parent / args.file
    save_checkpoint(packed, target, exist="replace")
    metrics = json.loads(Path(args.eval).read_text()) if args.eval else {}
    summary = {lab: round(v["mAP50"], 3) for lab, v in metrics.get("labs", {}).items()}
    entry = record_bundled({
        "name": args.name, "task": "detector", "file": args.file, "card": args.card, "arch": packed["arch"],
        "classes": list(packed["classes"]),
        "summary": "YOLOv3-tiny trained on BCCD and TXL-PBC (three labs) with stain and scale augmentation",
        "metrics": {"mAP50": float(packed["val_metrics"]["mAP50"]), "mAP50_by_lab": summary}})
    print(f"{target}: {target.stat().st_size / 1e6:.1f} MB, sha256 {entry['sha256'][:16]}…")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("sources").set_defaults(fn=cmd_sources)
    sub.add_parser("anchors").set_defaults(fn=cmd_anchors)
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    t.add_argument("--exclude", action="append", default=[], choices=LABS)
    t.add_argument("--epochs", type=int, default=24)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--augment", default="lab", choices=("lab", "basic"))
    t.add_argument("--sizes", default="320,352,384,416,448,480")
    t.add_argument("--input-size", type=int, default=416)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--resume", action="store_true")
    t.add_argument("--weights", default="none", help="initial weights (a checkpoint to fine-tune)")
    t.add_argument("--warmup", type=int, default=200)
    t.add_argument("--synthetic", help="also train on these synthetic smears (bloodcell sample smear --out DIR)")
    t.set_defaults(fn=cmd_train)
    e = sub.add_parser("evaluate")
    e.add_argument("--model", required=True)
    e.add_argument("--json", required=True)
    e.add_argument("--chula", type=int, default=120)
    e.set_defaults(fn=cmd_evaluate)
    k = sub.add_parser("pack")
    k.add_argument("--model", required=True)
    k.add_argument("--eval", help="the evaluate JSON of this model (its per-lab mAP goes into the manifest)")
    k.add_argument("--name", default="starter-detector")
    k.add_argument("--file", default="starter_detector.pt")
    k.add_argument("--card", default="docs/models/starter_detector.md")
    k.set_defaults(fn=cmd_pack)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
