"""What the review writes about a cell: its red-cell morphologies and the current cell's caption."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.morphology import canonical, is_red_cell_class

PLAIN_RED = ("rbc", "rbcs", "red blood cell", "red blood cells", "red cell", "red cells", "erythrocyte")
"""Red-cell classes that say nothing about morphology: a cell of these names shows only its flags' morphologies."""


def morphologies(class_name: str, flags: Any = ()) -> list[str]:
    """The red-cell morphology names of a cell (grading's canonical names): its class when that is a red-cell
    type other than a plain ``RBC``, then each flag that is one. Empty for white cells and platelets."""
    out: list[str] = []
    for name in [class_name, *(flags or [])]:
        name = str(name)
        if is_red_cell_class(name) and canonical(name) not in PLAIN_RED and canonical(name) not in out:
            out.append(canonical(name))
    return out


def cell_caption(info: dict[str, Any]) -> str:
    """The current cell's caption: class, the morphologies its class does not already say, and the score."""
    extra = [m for m in morphologies(info["class"], info.get("flags")) if m != canonical(info["class"])]
    score = info.get("score", np.nan)
    return (info["class"] + (f" · {', '.join(extra)}" if extra else "")
            + ("" if score is None or np.isnan(score) else f" {score:.2f}"))
