"""The models a person used recently, offered first in the Detect widget (a small JSON list, written atomically)."""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import atomic_write_text
from ..paths import home

MAX_RECENT = 8


def _file(kind: str) -> Path:
    return home() / ("recent_models.json" if kind == "detector" else f"recent_{kind}s.json")


def recent_models(kind: str = "detector") -> list[str]:
    """Recently used checkpoint paths of one kind (detector, classifier) that still exist, newest first."""
    try:
        items = json.loads(_file(kind).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [p for p in items if isinstance(p, str) and Path(p).is_file()]


def remember(path: str | Path, kind: str = "detector") -> None:
    resolved = str(Path(path).resolve())
    items = [resolved] + [p for p in recent_models(kind) if p != resolved]
    try:
        atomic_write_text(_file(kind), json.dumps(items[:MAX_RECENT], indent=1), exist="replace")
    except OSError:
        pass  # a read-only home must not stop detection
