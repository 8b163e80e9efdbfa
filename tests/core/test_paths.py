"""The plugin's folder comes from one rule: BLOODCELL_HOME when set to something, else platformdirs (or the old
~/.napari-bloodcell an install already uses); the registry, settings and recent models all follow it."""

from pathlib import Path

import pytest
from platformdirs import user_data_path

from napari_bloodcell.core import paths
from napari_bloodcell.core.models import recent
from napari_bloodcell.core.models.registry import default_registry
from napari_bloodcell.core.settings import load_settings, save_setting


@pytest.fixture
def fake_user(tmp_path, monkeypatch):
    """A user whose home and data folder are inside tmp_path; BLOODCELL_HOME unset."""
    monkeypatch.delenv("BLOODCELL_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "user" / "data"))
    monkeypatch.setattr(paths, "LEGACY_HOME", tmp_path / "user" / ".napari-bloodcell")
    return tmp_path / "user"


def test_bloodcell_home_wins_and_everything_follows_it(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOODCELL_HOME", str(tmp_path / "h"))
    assert paths.home() == tmp_path / "h"
    assert default_registry() == tmp_path / "h" / "registry"
    assert recent._file("classifier") == tmp_path / "h" / "recent_classifiers.json"
    save_setting("reviewer", "ada")
    assert (tmp_path / "h" / "settings.json").is_file() and load_settings() == {"reviewer": "ada"}


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_bloodcell_home_is_unset_not_the_current_folder(fake_user, monkeypatch, value):
    monkeypatch.setenv("BLOODCELL_HOME", value)
    expected = user_data_path("napari-bloodcell", appauthor=False)
    assert paths.home() == expected and expected.is_absolute()
    assert default_registry() == expected / "registry"  # once a relative ./registry


def test_the_default_is_the_platform_data_folder(fake_user):
    assert paths.home() == user_data_path("napari-bloodcell", appauthor=False)
    assert paths.home().name == "napari-bloodcell"


def test_an_existing_old_home_keeps_being_used(fake_user):
    if fake_user not in user_data_path("napari-bloodcell", appauthor=False).parents:
        pytest.skip("this platform's data folder does not follow HOME/XDG_DATA_HOME; nothing real is created")
    (fake_user / ".napari-bloodcell" / "registry").mkdir(parents=True)
    assert paths.home() == fake_user / ".napari-bloodcell"
    user_data_path("napari-bloodcell", appauthor=False).mkdir(parents=True)  # once the new one exists, it wins
    assert paths.home() == user_data_path("napari-bloodcell", appauthor=False)


def test_a_tilde_in_bloodcell_home_is_expanded(fake_user, monkeypatch):
    monkeypatch.setenv("BLOODCELL_HOME", "~/bc")
    assert paths.home() == Path(fake_user) / "bc"
