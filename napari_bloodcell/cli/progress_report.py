"""The one CLI progress reporter: reads :class:`~..core.progress.Progress` fields, never parses text.

Counted steps (images, tiles, windows, validation items) show as tqdm bars on an interactive terminal and stay
silent otherwise (logs stay readable); training iterations print a line every ``log_every`` iterations and each
validation prints its metrics; messages print as they come. ``jsonl`` prints every event as one JSON line on stdout
instead (what the napari widget reads from a CLI subprocess).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from typing import Any

from ..core.progress import Progress


def progress_json(item: Progress) -> str:
    """One JSON line for an event (NaN written as null: strict JSON readers refuse NaN)."""
    from ..core.untrusted import json_text

    return json_text({"progress": item.as_dict()})


def format_metrics(metrics: Mapping[str, Any], skip: tuple[str, ...] = ()) -> str:
    parts = []
    for key, value in metrics.items():
        if key in skip:
            continue
        if isinstance(value, Mapping):
            inner = format_metrics(value)
            if inner:
                parts.append(f"{key} ({inner})")
        elif isinstance(value, float) and not math.isnan(value):
            parts.append(f"{key} {value:.4f}")
    return ", ".join(parts)


def reporter(label: str = "", quiet: bool = False, log_every: int = 10,
             jsonl: bool = False) -> Callable[[Any], None]:
    """A ``drain`` callback printing ``label``'s progress on stderr (or JSON lines on stdout)."""
    bars: dict[tuple[str, str], Any] = {}
    tty = sys.stderr.isatty()

    def bar(item: Progress) -> None:
        if not tty:
            return
        from tqdm import tqdm

        key = (item.stage, item.kind)
        current = bars.get(key)
        if current is None or current.total != item.total or item.step < current.n:
            if current is not None:
                current.close()
            name = " ".join(x for x in (label, item.stage, "" if item.kind == "step" else item.kind) if x)
            current = bars[key] = tqdm(total=item.total, desc=name, file=sys.stderr, leave=False)
        current.update(item.step - current.n)
        if item.step >= item.total:
            current.close()
            bars.pop(key, None)

    def report(item: Any) -> None:
        if not isinstance(item, Progress):
            return
        if jsonl:
            print(progress_json(item), flush=True)
            return
        if quiet:
            return
        where = f"{item.stage}: " if item.stage else ""
        if item.kind == "train":
            if item.step % max(log_every, 1) == 0 or item.step == item.total:
                m = item.metrics
                eta = f" eta {item.eta_s / 60:.1f} min" if item.eta_s is not None else ""
                print(f"{where}epoch {item.epoch}/{item.epochs} iter {item.step}/{item.total} loss "
                      f"{m.get('loss', math.nan):.4f}{eta}", file=sys.stderr, flush=True)
        elif item.kind == "val":
            name = "round" if "round" in item.metrics else "epoch"
            head = f"{name} {item.epoch}/{item.epochs}: " if item.epoch else ""
            text = item.message or format_metrics(item.metrics, skip=("epoch", "round", "iteration"))
            print(f"{where}{head}{text}{' (best)' if item.best else ''}", file=sys.stderr, flush=True)
        elif item.total:
            bar(item)
        elif item.message:
            print(f"{where}{item.message}", file=sys.stderr, flush=True)

    return report
