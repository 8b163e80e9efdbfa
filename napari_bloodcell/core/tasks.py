"""What each trainable task is, in one place: detector, classifier, segmenter.

The registry, retraining, the CLI verbs and the widgets look a task up here and nowhere else: its checkpoint
format, the headline metric a new version is compared on (and how to label it), and what a training round and a
validation unit are called. Kept free of torch imports, so reading a registry or building the CLI parser stays
cheap.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str
    format: str
    """The ``format`` string every checkpoint of this task carries."""
    headline: str
    """The metric a retrained version is compared with its parent on (higher is better)."""
    headline_label: str
    progress_metric: str
    """The metric each training round's ``val`` event shows (a per-round quick score)."""
    progress_label: str
    round_name: str
    """What one training round is: an ``epoch``, or a ``round`` of patch iterations."""
    unit: str
    """What the validation split holds: images, cells or cases."""
    alternates: tuple[tuple[str, str], ...] = ()
    """Headlines used instead when the first is absent (a multi-label classifier's exact match)."""

    def score(self, metrics: Mapping[str, Any] | None) -> float:
        """The headline value of a metrics dict (NaN when it has none)."""
        if not metrics:
            return math.nan
        for key, _ in ((self.headline, self.headline_label), *self.alternates):
            value = metrics.get(key)
            if value is not None:
                return float(value)
        return math.nan

    def label_of(self, metrics: Mapping[str, Any] | None) -> str:
        """The label of the headline :meth:`score` used."""
        for key, label in ((self.headline, self.headline_label), *self.alternates):
            if metrics and metrics.get(key) is not None:
                return label
        return self.headline_label


TASKS: dict[str, TaskSpec] = {
    "detector": TaskSpec("detector", "napari-bloodcell/detector", "mAP50", "mAP@0.5", "mAP50", "val mAP@0.5",
                         "epoch", "image"),
    "classifier": TaskSpec("classifier", "napari-bloodcell/classifier", "macro_f1", "macro F1", "val_macro_f1",
                           "val macro F1", "epoch", "cell",
                           alternates=(("exact_match", "exact match"),)),
    "segmenter": TaskSpec("segmenter", "napari-bloodcell/segmenter", "mean_dice", "mean Dice", "mean_dice",
                          "val mean Dice", "round", "case"),
}


def task(name: str) -> TaskSpec:
    from .errors import BloodcellInputError

    try:
        return TASKS[name]
    except KeyError:
        raise BloodcellInputError(f"unknown task {name!r}; one of {', '.join(TASKS)}") from None
