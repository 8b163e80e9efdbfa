"""Small per-user settings (the reviewer's name, last folders), kept as JSON in the plugin's home folder."""

from __future__ import annotations

import json
from typing import Any

from .atomic import atomic_write_text
from .paths import home


def load_settings() -> dict[str, Any]:
    try:
        data = json.loads((home() / "settings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_setting(key: str, value: Any) -> None:
    data = load_settings()
    data[key] = value
    try:
        atomic_write_text(home() / "settings.json", json.dumps(data, indent=1), exist="replace")
    except OSError:
        pass  # a read-only home must not stop a review
