"""Archives on a Dask cluster: ``bloodcell detect|classify|segment ... --workers N | --scheduler ADDRESS``.

One task per image (or volume). A task runs in a worker process, loads its model once per process
(:func:`cached`, so a thousand images cost one load per worker, not a thousand) and returns plain data; the
submitting process writes each result as it arrives (:class:`~.parts.PartStore`), so a rerun after a crash, a
kill or Cancel skips finished items, and the caller assembles the final output atomically at the end. A bad image
does not stop the others: the job finishes what it can and then names the failures in one line.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BloodcellInputError
from ..io.records import AnnotationSet, ImageRecord
from ..progress import Progress, note, step
from .cluster import ClusterSpec, completed, dask_client, worker_error
from .parts import PartStore, item_identity, record_from_json, record_to_json

Job = tuple[str, Callable[..., dict[str, Any]], tuple]
"""(item identity, the task function, its arguments)."""

# ------------------------------------------------------------------------------------- in each worker process

_MODELS: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
LOADS: collections.Counter[str] = collections.Counter()
MODELS_KEPT = 2
"""Models kept per worker process (a detector and a classifier): memory stays bounded on a long-lived cluster."""


def cached(kind: str, key: tuple, make: Callable[[], Any]) -> Any:
    """The worker's copy of a model, built by ``make`` on first use in this process."""
    full = (kind, *key)
    if full in _MODELS:
        _MODELS.move_to_end(full)
        return _MODELS[full]
    model = make()
    LOADS[kind] += 1
    _MODELS[full] = model
    while len(_MODELS) > MODELS_KEPT:
        _MODELS.popitem(last=False)
    return model


def model_loads() -> dict[str, int]:
    """How many models this process has loaded, by kind (``client.run(model_loads)`` asks every worker)."""
    return dict(LOADS)


def worker_device(device: str | None) -> str | None:
    """``auto`` on a worker of a multi-GPU node: one GPU per worker, by the worker's number (LocalCluster names
    workers 0..N-1); anything else as given."""
    if device not in (None, "", "auto"):
        return device
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return device
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return device
    return f"cuda:{int(name) % torch.cuda.device_count()}" if isinstance(name, int) else device


def detect_image(path: str, model: str, device: str | None, batch: int, score: float, nms_iou: float,
                 tile: int | None, overlap: int | None) -> dict[str, Any]:
    """One image's detections (a worker task)."""
    from ..inference.detect import detect_files, load_predictor
    from ..progress import drain

    device = worker_device(device)
    predictor = cached("detector", (model, device, batch), lambda: load_predictor(model, device, batch))
    aset = drain(detect_files(predictor, [path], score, nms_iou, tile, overlap))
    return {"record": record_to_json(aset.images[0]), "classes": list(predictor.classes),
            "model_id": predictor.model_id, "ms": aset.extra["info"]["ms_per_image"]}


def classify_image(path: str, record: dict[str, Any] | None, classes: list[str] | None, target: str | None,
                   model: str, device: str | None, batch: int, detector: str | None, score: float
                   ) -> dict[str, Any]:
    """One image's cells typed (a worker task): boxes given, or found first by ``detector``, or the whole image."""
    from ..inference.classify import classify_record, load_classifier, merged_classes, whole_image_record
    from ..io.images import read_image
    from ..progress import drain

    device = worker_device(device)
    pred = cached("classifier", (model, device, batch), lambda: load_classifier(model, device, batch))
    image = read_image(path)
    if detector:
        from ..inference.detect import detect_array, detections_record, load_predictor

        det = cached("detector", (detector, device, 4), lambda: load_predictor(detector, device, 4))
        dets = drain(detect_array(det, image, score, 0.5))
        rec = detections_record(Path(path).name, image.shape[1], image.shape[0], dets, det.model_id, Path(path))
        classes = list(det.classes)
        if target is None:
            target = pred.target_class if pred.target_class in classes else None
    elif record is not None and classes is not None:
        rec = record_from_json(record, len(classes))
    else:
        rec = whole_image_record(Path(path), image.shape[1], image.shape[0])
        classes, target = ["image"], None
    out_classes = list(classes) if pred.multilabel else merged_classes(classes, pred.classes, target)
    t0 = time.perf_counter()
    typed = drain(classify_record(pred, image, rec, classes, target, out_classes))
    cells = int(sum(target is None or classes[int(x)] == target for x in rec.labels))
    return {"record": record_to_json(typed), "classes": out_classes, "cells": cells, "target": target,
            "model_id": pred.model_id, "ms": (time.perf_counter() - t0) * 1000.0}


def segment_case(images: list[str], model: str, device: str | None, patch: tuple[int, int, int] | None,
                 overlap: float, blend: str, batch: int, amp: bool, largest_only: bool) -> dict[str, Any]:
    """One case's label map (a worker task); the submitting process writes it."""
    from ..datasets.volumes import load_image_channels
    from ..device import as_device
    from ..inference.segment3d import load_segmenter, segment_array
    from ..progress import drain

    device = worker_device(device)
    seg = cached("segmenter", (model, device), lambda: load_segmenter(model, as_device(device)))
    image, vol = load_image_channels([Path(p) for p in images])
    result = drain(segment_array(seg, image, vol.spacing, patch, overlap, blend, batch, amp,
                                 largest_only=largest_only))
    return {"labels": result.labels, "affine": np.asarray(vol.affine), "seconds": result.seconds,
            "windows": result.windows, "warnings": list(vol.warnings) + list(result.warnings)}


# ----------------------------------------------------------------------------------- in the submitting process


def run_jobs(spec: ClusterSpec, store: PartStore, jobs: list[Job], unit: str,
             keep: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
             done: Callable[[str, dict[str, Any]], bool] | None = None
             ) -> Generator[Progress, None, dict[str, dict[str, Any]]]:
    """Run the jobs not already in ``store`` on the cluster, saving each result as it arrives (``keep`` may turn
    it into what is stored, e.g. write a label map and keep its summary); ``done`` may reject a stored result
    (its output was deleted since). Raises one line naming the failures once the others are finished."""
    results: dict[str, dict[str, Any]] = {}
    todo: list[Job] = []
    for job in jobs:
        found = store.load(job[0])
        if found is not None and (done is None or done(job[0], found)):
            results[job[0]] = found
        else:
            todo.append(job)
    total = len(jobs)
    if results:
        yield note(f"{len(results)} of {total} {unit}(s) already done (in {store.folder}); running the other "
                   f"{len(todo)}")
    failures: list[str] = []
    if todo:
        yield note(f"starting {spec.describe()}", "load")
        with dask_client(spec) as client:
            futures = {client.submit(fn, *args, pure=False): identity for identity, fn, args in todo}
            yield step(len(results), total)
            for future in completed(client, list(futures)):
                identity = futures[future]
                if future.status != "finished":
                    failures.append(worker_error(future))
                else:
                    result = future.result()
                    result = keep(identity, result) if keep is not None else result
                    store.save(identity, result)
                    results[identity] = result
                future.release()
                yield step(len(results) + len(failures), total)
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise BloodcellInputError(f"{len(failures)} of {total} {unit}(s) failed: {failures[0]}{more}; the "
                                  f"{len(results)} finished are kept in {store.folder}: fix or remove the failed "
                                  "input(s) and rerun the same command to finish")
    return results


def model_setting(name: str) -> str:
    """A model as it goes into the job's settings: its file's digest, so a changed checkpoint is not mixed in."""
    from ..models.checkpoints import file_digest

    path = Path(name)
    return f"{path.name}@{file_digest(path, 16)}" if path.is_file() else name


def shipped_name(model: str | Path, task: str) -> tuple[str, str]:
    """The model argument resolved here (``auto`` → the active or bundled model) as workers should load it: the
    word ``bundled`` for the shipped model (found in each worker's own installation), else the path; with the
    words saying which model it is."""
    from ..models.bundled import resolve

    name, label = resolve(model, task)
    return ("bundled" if label.startswith("bundled ") else name), label


def assemble(paths: list[Path], results: dict[str, dict[str, Any]], identities: list[str]
             ) -> tuple[list[str], list[ImageRecord]]:
    """The class list (every image's must agree) and the records in input order."""
    classes: list[str] | None = None
    records = []
    for path, identity in zip(paths, identities):
        result = results[identity]
        if classes is None:
            classes = list(result["classes"])
        elif list(result["classes"]) != classes:
            raise BloodcellInputError("images were processed with different class lists (the model changed during "
                                      "the run?); delete the parts folder and run again", path)
        try:
            records.append(record_from_json(result["record"], len(classes)))
        except ValueError as exc:
            raise BloodcellInputError(f"its stored result does not decode ({exc})", path) from None
    return classes or [], records


def detect_archive(model: str | Path, paths: list[Path], out: Path, spec: ClusterSpec, score: float = 0.3,
                   nms_iou: float = 0.5, tile: int | None = None, overlap: int | None = None,
                   device: str | None = "auto", batch: int = 4) -> Generator[Progress, None, AnnotationSet]:
    """Detect on every image on the cluster; returns the predictions (the caller writes them, then removes
    the parts folder)."""
    name, label = shipped_name(model, "detector")
    store = PartStore(out, {"verb": "detect", "model": model_setting(name), "score": score, "nms": nms_iou,
                            "tile": tile, "overlap": overlap})
    yield note(f"detecting with {label}")
    identities = [item_identity(p) for p in paths]
    jobs = [(i, detect_image, (str(p), name, device, batch, score, nms_iou, tile, overlap))
            for i, p in zip(identities, paths)]
    results = yield from run_jobs(spec, store, jobs, "image")
    classes, records = assemble(paths, results, identities)
    aset = AnnotationSet(classes, records, format="coco")
    model_id = results[identities[0]]["model_id"] if identities else name
    aset.extra["info"] = {"description": f"predictions of {model_id}", "model": model_id, "score_threshold": score,
                          "nms_iou": nms_iou, "ms_per_image": _mean(results, "ms"), "cluster": spec.describe()}
    return aset


def classify_archive(model: str | Path, paths: list[Path], out: Path, spec: ClusterSpec,
                     boxes: AnnotationSet | None = None, target: str | None = None, detector: str | None = None,
                     score: float = 0.3, device: str | None = "auto", batch: int = 16
                     ) -> Generator[Progress, None, AnnotationSet]:
    """Type the cells of every image on the cluster: ``boxes`` given (their records name the images), found by
    ``detector`` first, or one box over each whole image."""
    det_name = shipped_name(detector, "detector")[0] if detector else None
    settings = {"verb": "classify", "model": model_setting(str(model)), "target": target,
                "detector": model_setting(det_name) if det_name else None, "score": score}
    store = PartStore(out, settings)
    jobs, identities = [], []
    if boxes is not None:
        from ..inference.classify import record_image

        paths = [record_image(rec) for rec in boxes.images]
    for k, path in enumerate(paths):
        identity = item_identity(path) + (f"|{k}" if boxes is not None else "")
        record = record_to_json(boxes.images[k]) if boxes is not None else None
        classes = list(boxes.classes) if boxes is not None else None
        identities.append(identity)
        jobs.append((identity, classify_image, (str(path), record, classes, target, str(model), device, batch,
                                                det_name, score)))
    results = yield from run_jobs(spec, store, jobs, "image")
    out_classes, records = assemble(paths, results, identities)
    extra = dict(boxes.extra) if boxes is not None else {}
    cells = sum(int(results[i]["cells"]) for i in identities)
    ms = sum(float(results[i]["ms"]) for i in identities)
    first = results[identities[0]] if identities else {}
    extra["info"] = {**(extra.get("info") or {}), "classifier": first.get("model_id"), "target_class":
                     first.get("target"), "cells": cells, "ms_per_cell": ms / cells if cells else float("nan"),
                     "cluster": spec.describe()}
    aset = AnnotationSet(out_classes, records, boxes.format if boxes is not None else "coco",
                         boxes.root if boxes is not None else None, list(boxes.warnings) if boxes else [], extra)
    return aset


def segment_archive(inputs: list[Path], model: Path, out: Path, spec: ClusterSpec, device: str | None = "auto",
                    patch: tuple[int, int, int] | None = None, overlap: float = 0.5, blend: str = "gaussian",
                    batch: int = 2, amp: bool = True, suffix: str = "_seg", largest_only: bool = False
                    ) -> Generator[Progress, None, list[dict[str, Any]]]:
    """Segment every case on the cluster; each label map is written here as it arrives (never overwriting a
    file this job did not make), and a rerun skips cases already written."""
    from ..inference.segment3d import (_check_output_folder, case_summary, check_channels, check_window_args,
                                       load_segmenter, plan_segmentation)
    from ..io.nifti import save_nifti

    check_window_args(patch or (8, 8, 8), overlap, blend, batch)
    out = Path(out)
    _check_output_folder(out)
    settings = {"verb": "segment", "model": model_setting(str(model)), "patch": patch, "overlap": overlap,
                "blend": blend, "amp": amp, "largest": largest_only, "suffix": suffix}
    store = PartStore(segment_store(out), settings)
    try:
        cases, targets, channels = plan_segmentation(
            inputs, out, suffix, may_exist=lambda c, t: store.load(case_identity(c.images, t)) is not None)
        check_channels(channels, load_segmenter(model, "cpu").in_channels)  # before any work is sent out
    except BaseException:
        store.discard_if_empty()
        raise
    ids = [case_identity(c.images, t) for c, t in zip(cases, targets)]
    jobs = [(i, segment_case, ([str(p) for p in c.images], str(model), device, patch, overlap, blend, batch, amp,
                               largest_only)) for i, c in zip(ids, cases)]
    target_of = {i: (c, t) for i, c, t in zip(ids, cases, targets)}

    def keep(identity: str, result: dict[str, Any]) -> dict[str, Any]:
        case, target = target_of[identity]
        save_nifti(result["labels"], result["affine"], target, is_label_map=True)
        return case_summary(case, target, result["labels"].shape, result["seconds"], result["windows"],
                            result["warnings"])

    results = yield from run_jobs(spec, store, jobs, "case", keep=keep,
                                  done=lambda i, r: Path(target_of[i][1]).is_file())
    store.remove()
    return [results[i] for i in ids]


def segment_store(out: Path) -> Path:
    """Where a segmentation archive keeps its parts: inside the output folder (``OUT/.bloodcell-segment.parts``)."""
    return Path(out) / ".bloodcell-segment"


def case_identity(images: list[Path], target: Path) -> str:
    """A case is known by the label map it becomes and every input file's identity (a modality replaced since
    is redone)."""
    return "|".join([str(Path(target).resolve())] + [item_identity(p) for p in images])


def _mean(results: dict[str, dict[str, Any]], key: str) -> float | None:
    values = [float(r[key]) for r in results.values() if r.get(key) is not None]
    return float(np.mean(values)) if values else None
