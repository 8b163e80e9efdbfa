"""Shared fixtures: the shipped sample data, and ../shared/data when it is present (tests skip without it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _one_qt_binding() -> None:
    """napari imports Qt through qtpy (``QT_API``), pytest-qt through its own setting (``PYTEST_QT_API``, which beats
    ``qt_api`` in pyproject.toml). With PyQt5 and PyQt6 both installed, setting one alone would give two bindings in
    one process; ``QT_API=pyqt6 pytest tests/gui`` sets both. Runs at import: pytest-qt reads it in its configure
    hook, after the initial conftests."""
    qtpy_api, pytest_api = os.environ.get("QT_API"), os.environ.get("PYTEST_QT_API")
    if qtpy_api and not pytest_api:
        os.environ["PYTEST_QT_API"] = qtpy_api.lower()
    elif pytest_api and not qtpy_api:
        os.environ["QT_API"] = pytest_api.lower()


_one_qt_binding()

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO / "sample_data"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def sample_data() -> Path:
    return SAMPLE_DATA


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def dask_scheduler():
    """One local Dask cluster (2 worker processes) shared by the tests that run jobs on ``--scheduler``: starting
    one costs seconds, so the suite pays it once."""
    import logging

    import dask
    from distributed import LocalCluster

    from napari_bloodcell.core.scale.cluster import QUIET

    with dask.config.set(QUIET):  # idle for most of the suite: no profiler, a slow watchdog
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=logging.ERROR, memory_limit=0)
        try:
            yield cluster.scheduler_address
        finally:
            cluster.close()
