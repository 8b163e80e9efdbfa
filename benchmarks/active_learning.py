"""Does choosing which fields to review save reviewing? A simulated review, on real data (issue 19).

Detection (``detection``): a lab adopts a detector trained elsewhere and reviews its own fields.

- The first model is YOLOv3-tiny trained on the two other labs of TXL-PBC (PBC's CellaVision crops and
  Raabin-WBC: no BCCD photo), as ``starter_detector.py train --exclude bccd`` but at a fixed 320-px input and
  fewer epochs to fit the CPU budget.
- The pool is BCCD's training photos with TXL's fuller boxes; validation is BCCD's validation photos (the same
  stable 20% split as the starter detector), never reviewed.
- Each seed reviews a random seed set first; then each strategy adds ``k`` fields a round, chosen with the model of
  the round before. Every round fine-tunes the first model on all fields reviewed so far for the same number of
  epochs (the product's dataset, augmentation, loss and optimiser; no validation between epochs), then scores
  mAP@0.5 on validation. "All data" fine-tunes on the whole pool the same way.

Typing (``typing``): white-cell types of ``wbc_types`` on BCCD's white-cell boxes (types with at least 10 cells,
as ``wbc_types.sh``). The model is a linear head on the shipped starter detector's backbone, frozen: its stride-16
map of a 128-px crop, mean- and max-pooled (512 numbers), reduced to 64 principal directions of the pool (no
labels), and fitted each round as a class-balanced logistic regression. (The product's ``darknet_tiny``
classifier heads the stride-32 map; on these cells the stride-16 map typed better in a 5-fold check, accuracy
0.756 against 0.644.) Cells are scored with their class probabilities, their mirror image's and their features by
the same functions as ``bloodcell suggest``. Each seed draws its own validation photos (20%; seed 0 is the
project's stable split), so the spread covers both the first cells reviewed and which cells are validated.

    python benchmarks/active_learning.py detection --out benchmarks/results/active/detection.json
    python benchmarks/active_learning.py typing --out benchmarks/results/active/typing.json
    python benchmarks/active_learning.py report --detection ... --typing ... --plot docs/images/active_learning.png

``bash benchmarks/active_learning.sh`` runs all three. A detection run resumes: a finished (seed, strategy) run in
``--out`` is kept and skipped (a file made with other settings is refused). Typing takes minutes and reruns whole.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import starter_detector  # noqa: E402  (the labs, their split and their boxes)

from napari_bloodcell.core.active.acquisition import STRATEGIES, select  # noqa: E402
from napari_bloodcell.core.atomic import atomic_write_text  # noqa: E402

DATA = starter_detector.DATA


def _save(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1), exist="replace")


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


# ------------------------------------------------------------------------------------------------ detection
def finetune(records, classes, weights: str, args, seed: int, epochs: int | None = None):
    """The product's detector training, minus per-epoch validation: returns the final model."""
    import torch

    from napari_bloodcell.core.datasets.detection import DetectionDataset, collate, repeat_factor_weights
    from napari_bloodcell.core.models.detectors import build_detector
    from napari_bloodcell.core.training.engine import round_generator

    torch.manual_seed(seed)
    epochs = epochs or args.epochs
    model = build_detector("yolov3_tiny", classes, weights, {"input_size": args.input_size})
    model.train()
    dataset = DetectionDataset(records, augment="lab")
    weights_ = repeat_factor_weights(records, len(classes))
    batch = min(args.batch, len(records))
    iters = max(1, len(records) // batch)
    total = iters * epochs
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                                  weight_decay=5e-4)
    warm = max(1, min(50, total // 4))
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: min(1.0, (it + 1) / warm) * 0.5 * (
        1 + math.cos(math.pi * min(it, total) / total)))
    for epoch in range(epochs):
        gen = round_generator(seed, epoch)
        sampler = torch.utils.data.WeightedRandomSampler(weights_, num_samples=iters * batch, replacement=True,
                                                         generator=gen)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, collate_fn=collate,
                                             num_workers=0)
        for images, targets in loader:
            losses = model(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise RuntimeError("training diverged")
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            sched.step()
    model.eval()
    return model


def evaluate(model, records, classes) -> dict:
    import torch

    from napari_bloodcell.core.training.detection import evaluate_model

    m = evaluate_model(model, records, classes, torch.device("cpu"))
    return {"mAP50": float(m["mAP50"]), "per_class_AP50": {k: float(v) for k, v in m["per_class_AP50"].items()}}


def score_pool(model, images: dict, candidates: list[int], strategy: str):
    """Uncertainty and embeddings of the candidate fields with ``model``, as ``bloodcell suggest`` computes them
    (one pass for diversity, two otherwise), at the detection threshold of 0.3."""
    from napari_bloodcell.core.active.scoring import score_field
    from napari_bloodcell.core.active.suggest import field_embedding

    predictor = _predictor(model)
    unc, emb = [], []
    for i in candidates:
        if strategy == "diversity":
            emb.append(field_embedding(predictor, images[i], 0.3))
            unc.append(0.0)
        else:
            s = score_field(predictor, images[i], score=0.3, tile=0)
            unc.append(s.uncertainty)
            emb.append(s.embedding)
    return np.array(unc), np.stack(emb)


def _predictor(model):
    import torch

    from napari_bloodcell.core.inference.detect import TorchPredictor

    return TorchPredictor(model, "simulation", torch.device("cpu"), batch_size=1)


def pool_embeddings(model, images: dict, indices: list[int]) -> np.ndarray:
    from napari_bloodcell.core.active.suggest import field_embedding

    predictor = _predictor(model)
    return np.stack([field_embedding(predictor, images[i], 0.3) for i in indices])


def cmd_detection(args) -> None:
    import torch

    from napari_bloodcell.core.io.images import read_image

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = _load(out) or {"runs": {}}
    labs = starter_detector.gather()
    classes = starter_detector.CLASSES
    pool, val = labs["bccd"]
    if args.val_limit:
        val = val[:args.val_limit]
    init = Path(args.init)
    if not init.exists():
        t0 = time.time()
        other = labs["pbc"][0] + labs["raabin"][0]
        print(f"first model: {len(other)} PBC + Raabin photos, {args.init_epochs} epochs", flush=True)
        model = finetune(other, classes, "none", argparse.Namespace(**{**vars(args), "lr": args.init_lr}), seed=0,
                         epochs=args.init_epochs)
        init.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), init.with_suffix(".tmp"))
        os.replace(init.with_suffix(".tmp"), init)
        results["init"] = {"records": len(other), "epochs": args.init_epochs, "seconds": round(time.time() - t0),
                           "lr": args.init_lr}
        _save(out, results)
    weights = str(init)
    if "init_val" not in results:
        from napari_bloodcell.core.models.detectors import build_detector

        model = build_detector("yolov3_tiny", classes, weights, {"input_size": args.input_size}).eval()
        results["init_val"] = evaluate(model, val, classes)
        print("first model on BCCD validation:", results["init_val"], flush=True)
        _save(out, results)
    images = {i: read_image(r.path) for i, r in enumerate(pool)}
    setting = {"pool": len(pool), "val": len(val), "seed_fields": args.seed_fields, "k": args.k,
               "rounds": args.rounds, "epochs": args.epochs, "batch": args.batch, "lr": args.lr,
               "input_size": args.input_size, "threads": args.threads}
    if results.get("setting", setting) != setting:  # a resumed file's runs must all share one setting
        sys.exit(f"{out} holds runs made with {results['setting']}; these arguments give {setting}: "
                 "choose another --out")
    results["setting"] = setting
    for seed in range(args.seeds):
        key_all = f"all/{seed}"
        rng = np.random.default_rng(1000 + seed)
        start = [int(i) for i in rng.choice(len(pool), args.seed_fields, replace=False)]
        seed_model = None
        for strategy in args.strategies.split(","):
            key = f"{strategy}/{seed}"
            if key in results["runs"]:
                continue
            t0 = time.time()
            labelled = list(start)
            curve = []
            for r in range(args.rounds + 1):
                tr = time.time()
                if r == 0 and seed_model is not None:
                    model, metrics = seed_model
                else:
                    model = finetune([pool[i] for i in labelled], classes, weights, args, seed=seed)
                    metrics = evaluate(model, val, classes)
                    if r == 0:
                        seed_model = (model, metrics)
                curve.append({"fields": len(labelled), **metrics, "seconds": round(time.time() - tr, 1)})
                print(f"seed {seed} {strategy:11s} {len(labelled):3d} fields mAP50 {metrics['mAP50']:.3f} "
                      f"({time.time() - tr:.0f} s)", flush=True)
                if r == args.rounds:
                    break
                candidates = [i for i in range(len(pool)) if i not in set(labelled)]
                if strategy == "random":
                    pick = select("random", args.k, uncertainty=np.zeros(len(candidates)), seed=seed * 100 + r)
                else:
                    unc, emb = score_pool(model, images, candidates, strategy)
                    reviewed = pool_embeddings(model, images, labelled) if strategy != "uncertainty" else None
                    pick = select(strategy, args.k, uncertainty=unc, embeddings=emb, reviewed=reviewed)
                labelled += [candidates[j] for j in pick.order]
            results["runs"][key] = {"strategy": strategy, "seed": seed, "curve": curve, "labelled": labelled,
                                    "seconds": round(time.time() - t0)}
            _save(out, results)
        if key_all not in results["runs"] and args.all_data:
            t0 = time.time()
            model = finetune(pool, classes, weights, args, seed=seed)
            metrics = evaluate(model, val, classes)
            print(f"seed {seed} all {len(pool)} fields mAP50 {metrics['mAP50']:.3f}", flush=True)
            results["runs"][key_all] = {"strategy": "all", "seed": seed, "curve": [{"fields": len(pool), **metrics}],
                                        "seconds": round(time.time() - t0)}
            _save(out, results)


# ------------------------------------------------------------------------------------------------ typing
def typing_features(args):
    """Every WBC cell of wbc_types: the frozen starter backbone's stride-16 map of the crop and of its mirror image,
    mean- and max-pooled (512 numbers), its type and its photo; cached in ``--cache``."""
    import torch

    from napari_bloodcell.core.crops import CROP_CONTEXT, cell_crops
    from napari_bloodcell.core.datasets.classification import eval_transforms, load_samples, to_tensor
    from napari_bloodcell.core.io.images import read_image
    from napari_bloodcell.core.models.classifiers import build_classifier

    cache = Path(args.cache)
    made_with = f"{Path(args.starter).resolve()}@{args.input_size}"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        if "made_with" in z.files and str(z["made_with"]) == made_with:
            return z["feats"], z["mirror"], z["target"], [str(g) for g in z["groups"]], \
                [str(c) for c in z["classes"]]
    sset = load_samples(DATA / "wbc_types" / "labels.csv", [DATA / "bccd" / "JPEGImages"], DATA / "bccd",
                        box_class="WBC")
    model = build_classifier("darknet_tiny", list(sset.classes), str(Path(args.starter)),
                             input_size=args.input_size).eval()
    net = model.net
    resize = eval_transforms(model.input_size)

    def describe(x):
        with torch.no_grad():
            s16, _ = net.backbone(x * net.std + net.mean)  # as DarknetTinyClassifier.forward, one stage earlier
        return torch.cat([s16.mean((2, 3)), s16.amax((2, 3))], 1)[0].numpy()

    feats, mirror = [], []
    for s in sset.samples:
        crop = cell_crops(read_image(s.path), s.box[None], CROP_CONTEXT)[0] if s.box is not None else read_image(s.path)
        x = resize(to_tensor(crop))[None]
        feats.append(describe(x))
        mirror.append(describe(torch.flip(x, dims=[3])))
    target = np.array([int(s.target) for s in sset.samples])
    groups = [str(s.group) for s in sset.samples]
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, feats=np.stack(feats), mirror=np.stack(mirror), target=target, groups=np.array(groups),
             classes=np.array(sset.classes), made_with=np.array(made_with))
    return np.stack(feats), np.stack(mirror), target, groups, list(sset.classes)


def cmd_typing(args) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, f1_score
    from sklearn.preprocessing import StandardScaler

    from napari_bloodcell.core.active.acquisition import class_entropy, probability_disagreement
    from napari_bloodcell.core.datasets.detection import is_validation

    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)  # BLAS threads spinning beside a training run cost more than they give
    feats, mirror, target, groups, classes = typing_features(args)
    counts = np.bincount(target, minlength=len(classes))
    keep_cls = [i for i, c in enumerate(counts) if c >= args.min_count]  # as wbc_types.sh: --min-count 10
    keep = np.isin(target, keep_cls)
    remap = {old: new for new, old in enumerate(keep_cls)}
    feats, mirror = feats[keep], mirror[keep]
    target = np.array([remap[t] for t in target[keep]])
    groups = [g for g, k in zip(groups, keep) if k]
    classes = [classes[i] for i in keep_cls]
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline

    n_cls = len(classes)
    f = fm = pool = val = None

    def split(seed: int):
        """Seed 0 is the project's stable split of photos; each further seed draws its own 20% of photos, so the
        spread over seeds covers both the first cells reviewed and which cells are validated (about 50 each)."""
        nonlocal f, fm, pool, val
        is_val = np.array([is_validation(g, 0.2, **({"salt": f"active{seed}"} if seed else {})) for g in groups])
        pool, val = np.flatnonzero(~is_val), np.flatnonzero(is_val)
        # the head sees the backbone's features reduced to their main directions (fitted on the pool, no labels):
        # a logistic regression on all 512 features takes seconds a fit here, on 64 milliseconds
        reduce = make_pipeline(StandardScaler(), PCA(args.components, random_state=0)).fit(feats[pool])
        f, fm = reduce.transform(feats), reduce.transform(mirror)

    def fit(idx):
        model = LogisticRegression(C=args.C, class_weight="balanced", max_iter=2000)
        model.fit(f[idx], target[idx])
        return model

    def probs(model, x):
        p = np.zeros((len(x), n_cls))
        p[:, model.classes_] = model.predict_proba(x)
        return p

    def metrics(model):
        pred = probs(model, f[val]).argmax(1)
        return {"accuracy": float((pred == target[val]).mean()),
                "balanced_accuracy": float(balanced_accuracy_score(target[val], pred)),
                "macro_f1": float(f1_score(target[val], pred, average="macro", labels=list(range(n_cls)),
                                           zero_division=0))}

    out = Path(args.out)
    split(0)
    results = {"runs": {}, "classes": classes, "pool": int(len(pool)), "val": int(len(val)),
               "setting": {"seed_cells": args.seed_cells, "k": args.k, "rounds": args.rounds, "C": args.C,
                           "components": args.components, "min_count": args.min_count,
                           "input_size": args.input_size},
               "val_counts": {c: int((target[val] == i).sum()) for i, c in enumerate(classes)},
               "pool_counts": {c: int((target[pool] == i).sum()) for i, c in enumerate(classes)}}
    for seed in range(args.seeds):
        split(seed)
        rng = np.random.default_rng(2000 + seed)
        start = None
        while start is None or len(set(target[pool[start]])) < 2:  # a classifier needs two types to start
            start = [int(i) for i in rng.choice(len(pool), args.seed_cells, replace=False)]
        for strategy in args.strategies.split(","):
            labelled = list(start)
            curve = []
            for r in range(args.rounds + 1):
                model = fit(pool[labelled])
                curve.append({"cells": len(labelled), **metrics(model)})
                if r == args.rounds:
                    break
                cand = [i for i in range(len(pool)) if i not in set(labelled)]
                if not cand:  # this seed's pool is used up
                    break
                p, q = probs(model, f[pool[cand]]), probs(model, fm[pool[cand]])
                unc = (class_entropy(p) + probability_disagreement(p, q)) / 2
                pick = select(strategy, args.k, uncertainty=unc, embeddings=feats[pool[cand]],
                              reviewed=feats[pool[labelled]], seed=seed * 100 + r)
                labelled += [cand[j] for j in pick.order]
            results["runs"][f"{strategy}/{seed}"] = {"strategy": strategy, "seed": seed, "curve": curve}
        results["runs"][f"all/{seed}"] = {"strategy": "all", "seed": seed,
                                          "curve": [{"cells": int(len(pool)), **metrics(fit(pool))}]}
        print(f"seed {seed}: " + ", ".join(f"{s} {results['runs'][f'{s}/{seed}']['curve'][-1]['accuracy']:.3f}"
                                           for s in args.strategies.split(",") + ["all"]), flush=True)
    _save(out, results)


# ------------------------------------------------------------------------------------------------ report
def summarise(results: dict, unit: str, metric: str) -> dict:
    """Per strategy: mean and spread of ``metric`` per round; the reviewed fields (cells) at which the mean curve
    first reaches 95% of the mean all-data score; and per seed, where that seed's curve first reaches 95% of its
    own all-data score (each typing seed validates on its own photos). None where it never does."""
    runs = results["runs"]
    alls = {r["seed"]: r["curve"][-1][metric] for r in runs.values() if r["strategy"] == "all"}
    target = 0.95 * float(np.mean(list(alls.values()))) if alls else None
    out = {"all_data": float(np.mean(list(alls.values()))) if alls else None, "target_95": target,
           "strategies": {}}
    for strategy in STRATEGIES:
        seeds = [r for r in runs.values() if r["strategy"] == strategy]
        if not seeds:
            continue
        n = min(len(r["curve"]) for r in seeds)
        xs = [seeds[0]["curve"][i][unit] for i in range(n)]
        ys = np.array([[r["curve"][i][metric] for i in range(n)] for r in seeds])
        mean = ys.mean(0)
        reach = next((x for x, m in zip(xs, mean) if target is not None and m >= target), None)
        per_seed = [next((c[unit] for c in r["curve"] if r["seed"] in alls and c[metric] >= 0.95 * alls[r["seed"]]),
                         None) for r in seeds]
        out["strategies"][strategy] = {"x": xs, "mean": mean.tolist(), "min": ys.min(0).tolist(),
                                       "max": ys.max(0).tolist(), "std": ys.std(0).tolist(), "seeds": len(seeds),
                                       "q25": np.percentile(ys, 25, axis=0).tolist(),
                                       "q75": np.percentile(ys, 75, axis=0).tolist(),
                                       "reach_95": reach, "reach_95_per_seed": per_seed,
                                       "mean_over_rounds": float(mean.mean())}
    base = {r["seed"]: np.mean([c[metric] for c in r["curve"]]) for r in runs.values() if r["strategy"] == "random"}
    rng = np.random.default_rng(0)
    for strategy, v in out["strategies"].items():  # paired with random, seed by seed: the same first cells
        own = {r["seed"]: np.mean([c[metric] for c in r["curve"]]) for r in runs.values()
               if r["strategy"] == strategy}
        d = np.array([own[k] - base[k] for k in own if k in base])
        if strategy == "random" or not len(d):
            continue
        boot = [rng.choice(d, len(d)).mean() for _ in range(2000)]
        v["vs_random"] = {"mean_difference": float(d.mean()), "ci95": [float(np.percentile(boot, 2.5)),
                                                                        float(np.percentile(boot, 97.5))],
                          "seeds_better": int((d > 0).sum()), "seeds": int(len(d))}
        reached = [x for x in v["reach_95_per_seed"] if x is not None]
        v["reach_95_median_per_seed"] = float(np.median(reached)) if reached else None
    rs = out["strategies"].get("random")
    if rs is not None:
        reached = [x for x in rs["reach_95_per_seed"] if x is not None]
        rs["reach_95_median_per_seed"] = float(np.median(reached)) if reached else None
    return out


def cmd_report(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    if args.detection and Path(args.detection).exists():
        panels.append(("detection: BCCD fields reviewed", "fields", "mAP50", _load(Path(args.detection)),
                       "validation mAP@0.5"))
    if args.typing and Path(args.typing).exists():
        panels.append(("typing: white cells reviewed", "cells", "accuracy", _load(Path(args.typing)),
                       "validation accuracy"))
        panels.append(("typing: white cells reviewed", "cells", "macro_f1", _load(Path(args.typing)),
                       "validation macro-F1"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), squeeze=False)
    summary = {}
    for ax, (title, unit, metric, results, ylabel) in zip(axes[0], panels):
        s = summarise(results, unit, metric)
        summary[f"{unit}:{metric}"] = s
        for strategy, v in s["strategies"].items():
            line, = ax.plot(v["x"], v["mean"], marker="o", ms=3, label=strategy)
            # the spread over seeds: min-max with three seeds, the middle half (25-75%) with more
            lo, hi = (v["min"], v["max"]) if v["seeds"] <= 3 else (v["q25"], v["q75"])
            ax.fill_between(v["x"], lo, hi, color=line.get_color(), alpha=0.12)
        if s["all_data"] is not None:
            ax.axhline(s["all_data"], color="k", lw=0.8, ls="--", label="all data")
            ax.axhline(s["target_95"], color="k", lw=0.8, ls=":", label="95% of all data")
        ax.set_xlabel(title)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110)
    if args.json:
        _save(Path(args.json), summary)
    for name, s in summary.items():
        if not s["strategies"]:
            print(f"\n{name}: no runs yet")
            continue
        line = f"all data {s['all_data']:.3f}, 95% = {s['target_95']:.3f}" if s["all_data"] is not None else \
            "no all-data run yet"
        print(f"\n{name}: {line}")
        print("| strategy | " + " | ".join(str(x) for x in next(iter(s["strategies"].values()))["x"]) +
              " | reaches 95% at | per seed |")
        for strategy, v in s["strategies"].items():
            cells = " | ".join(f"{m:.3f} ± {sd:.3f}" for m, sd in zip(v["mean"], v["std"]))
            print(f"| {strategy} | {cells} | {v['reach_95']} | {v['reach_95_per_seed']} |")
        for strategy, v in s["strategies"].items():
            vs = v.get("vs_random")
            extra = "" if vs is None else (f"; vs random over the curve {vs['mean_difference']:+.4f} "
                                           f"[{vs['ci95'][0]:+.4f}, {vs['ci95'][1]:+.4f}], better in "
                                           f"{vs['seeds_better']}/{vs['seeds']} seeds")
            print(f"{strategy}: mean over rounds {v['mean_over_rounds']:.4f}, median per-seed reach "
                  f"{v.get('reach_95_median_per_seed')}{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("detection")
    d.add_argument("--out", required=True)
    d.add_argument("--init", default="/work/al/other_labs_320.pt", help="first model (trained here if missing)")
    d.add_argument("--init-epochs", type=int, default=3)
    d.add_argument("--seeds", type=int, default=3)
    d.add_argument("--seed-fields", type=int, default=10)
    d.add_argument("--k", type=int, default=10)
    d.add_argument("--rounds", type=int, default=4)
    d.add_argument("--epochs", type=int, default=6)
    d.add_argument("--batch", type=int, default=4)
    d.add_argument("--lr", type=float, default=2e-4, help="fine-tuning rate (the first model trains at --init-lr)")
    d.add_argument("--init-lr", type=float, default=1e-3)
    d.add_argument("--input-size", type=int, default=320)
    d.add_argument("--threads", type=int, default=2)
    d.add_argument("--val-limit", type=int, default=0)
    d.add_argument("--strategies", default=",".join(STRATEGIES))
    d.add_argument("--no-all-data", dest="all_data", action="store_false")
    d.set_defaults(fn=cmd_detection)
    t = sub.add_parser("typing")
    t.add_argument("--out", required=True)
    t.add_argument("--cache", default="/work/al/wbc_features16.npz")
    t.add_argument("--starter", default=str(Path(__file__).resolve().parents[1] / "napari_bloodcell" / "models" /
                                            "starter_detector.pt"))
    t.add_argument("--input-size", type=int, default=128)
    t.add_argument("--seeds", type=int, default=20)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--seed-cells", type=int, default=10)
    t.add_argument("--k", type=int, default=10)
    t.add_argument("--rounds", type=int, default=20)
    t.add_argument("--C", type=float, default=0.1)
    t.add_argument("--components", type=int, default=64)
    t.add_argument("--min-count", type=int, default=10)
    t.add_argument("--strategies", default=",".join(STRATEGIES))
    t.set_defaults(fn=cmd_typing)
    r = sub.add_parser("report")
    r.add_argument("--detection")
    r.add_argument("--typing")
    r.add_argument("--plot")
    r.add_argument("--json")
    r.set_defaults(fn=cmd_report)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
