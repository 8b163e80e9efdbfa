"""The Review's Retrain panel: Cancel stops the training process, registers nothing, clears the run's work folder
and gives the panel back (Retrain enabled, Cancel disabled), whenever it is pressed.

The panel runs ``bloodcell retrain`` in a child process; the dataset is four synthetic smear fields and the
detector the smallest one (SSDlite, one iteration per epoch), so the run is under way in seconds."""

from __future__ import annotations

import pytest

from napari_bloodcell.core.models.registry import ModelRegistry
from napari_bloodcell.gui.widgets.review_retrain import RetrainPanel

from ..core.cells import exported_fields

ME = "dr.retrain"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return exported_fields(tmp_path_factory.mktemp("fields"), by=ME)


@pytest.fixture
def panel(qtbot, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("BLOODCELL_HOME", str(tmp_path / "home"))
    panel = RetrainPanel(export=lambda folder, views: None, reviewer=lambda: ME)
    qtbot.addWidget(panel)
    panel.dataset.setText(str(dataset))
    panel.registry.setText(str(tmp_path / "registry"))
    panel.task.setCurrentText("detector")
    panel.arch.setCurrentText("ssdlite320_mobilenet_v3_large")
    panel.max_iters.setValue(1)
    assert panel.retrain_button.isEnabled(), panel.status.text()
    yield panel
    if panel.proc is not None and panel.proc.poll() is None:  # never leave a training process behind
        panel.proc.kill()
        qtbot.waitUntil(lambda: not panel.running, timeout=60_000)


def _nothing_registered_and_panel_free(panel, tmp_path) -> None:
    registry = tmp_path / "registry"
    # nothing registered: the table shows only the bundled model (v0000), when the package ships one
    shipped = ModelRegistry(registry).listing(panel.task.currentText())
    assert ModelRegistry(registry).versions() == [] and panel.models.rowCount() == len(shipped)
    work = registry / ".work"
    assert not work.exists() or not any(work.iterdir()), sorted(p.name for p in work.iterdir())
    assert panel.retrain_button.isEnabled() and not panel.cancel_button.isEnabled()
    assert "cancelled" in panel.status.text() and "nothing was registered" in panel.status.text(), \
        panel.status.text()


def test_cancel_during_training_stops_it_and_registers_nothing(qtbot, panel, tmp_path):
    panel.epochs.setValue(200)  # far more than the test waits for
    panel.retrain_button.click()
    assert panel.running and panel.cancel_button.isEnabled() and not panel.retrain_button.isEnabled()
    qtbot.waitUntil(lambda: len(panel.losses) > 0, timeout=180_000)  # an iteration is done: training is under way
    panel.cancel_button.click()
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    _nothing_registered_and_panel_free(panel, tmp_path)


def test_cancel_pressed_at_once_cancels_the_run(qtbot, panel, tmp_path):
    panel.epochs.setValue(1)
    panel.retrain_button.click()
    panel.cancel_button.click()  # before the training process has started
    qtbot.waitUntil(lambda: not panel.running, timeout=180_000)
    _nothing_registered_and_panel_free(panel, tmp_path)
