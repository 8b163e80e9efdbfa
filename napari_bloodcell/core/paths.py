"""The plugin's own folder (settings, recent models, the model registry, review projects), decided in one place.

``BLOODCELL_HOME`` wins when it is set to something; an empty value counts as unset (it once made the registry a
relative ``./registry`` in whatever folder a command ran from). Otherwise the folder is the platform's per-user
data folder from :mod:`platformdirs` (``~/.local/share/napari-bloodcell`` on Linux, ``~/Library/Application
Support/napari-bloodcell`` on macOS, ``%LOCALAPPDATA%\\napari-bloodcell`` on Windows). An install that already
keeps its registry in the old ``~/.napari-bloodcell`` goes on using it, so an update never hides a person's models.
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_data_path

APP_NAME = "napari-bloodcell"
LEGACY_HOME = Path("~/.napari-bloodcell")
"""Where every version before issue 15 kept its files."""


def home() -> Path:
    """The folder the plugin keeps its own files in (see the module docstring); not created here."""
    override = os.environ.get("BLOODCELL_HOME", "").strip()
    if override:
        return Path(override).expanduser()
    data = user_data_path(APP_NAME, appauthor=False)
    legacy = LEGACY_HOME.expanduser()
    return legacy if legacy.is_dir() and not data.exists() else data
