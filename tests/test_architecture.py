"""Layering rules: core never imports napari/Qt, importing the package stays light, the manifest is valid."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("napari", "qtpy", "magicgui", "superqt", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy")


def test_core_imports_no_gui_modules_at_runtime():
    core = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts)
        for p in (REPO / "napari_bloodcell" / "core").rglob("*.py")
        if p.name != "__init__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for m in {core!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "", f"core pulled in: {out.stdout}"


def test_import_linter_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[testing]')")
    out = subprocess.run([str(lint)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    kept = re.search(r"Contracts: (\d+) kept, 0 broken", out.stdout)
    assert kept and int(kept.group(1)) >= 3, out.stdout  # GUI-free core, Qt-free CLI, io/datasets below inference


def test_importing_the_package_is_light():
    code = "import sys, napari_bloodcell, napari_bloodcell.cli.main; print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'napari', 'qtpy', 'torchvision', 'skimage'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_manifest_is_valid_and_shipped():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-bloodcell")
    assert {s.key for s in manifest.contributions.sample_data} == {"smear", "mri"}
    assert {w.command for w in manifest.contributions.writers} == {
        "napari-bloodcell.write_shapes", "napari-bloodcell.write_labels", "napari-bloodcell.write_points"}
    for command in manifest.contributions.commands:
        module, _, attr = command.python_name.partition(":")
        assert callable(getattr(__import__(module, fromlist=[attr]), attr))
