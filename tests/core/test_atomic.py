import pytest

from napari_bloodcell.core.atomic import atomic_write_text, staged_directory
from napari_bloodcell.core.errors import BloodcellInputError


def test_refuse_keeps_the_users_file(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_text(p, "first")
    with pytest.raises(BloodcellInputError, match="refusing to overwrite"):
        atomic_write_text(p, "second")
    assert p.read_text() == "first"
    assert [x.name for x in tmp_path.iterdir()] == ["a.json"]  # no temporary files left behind


def test_backup_policy_keeps_the_previous_version(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_text(p, "first")
    atomic_write_text(p, "second", exist="backup")
    assert p.read_text() == "second"
    backups = [x for x in tmp_path.iterdir() if x.name.endswith(".bak")]
    assert len(backups) == 1 and backups[0].read_text() == "first"
    atomic_write_text(p, "third", exist="backup")
    assert sorted(x.read_text() for x in tmp_path.iterdir()) == ["first", "second", "third"]


def test_staged_directory_appears_whole_or_not_at_all(tmp_path):
    with staged_directory(tmp_path / "ok") as stage:
        (stage / "x").write_text("1")
        assert not (tmp_path / "ok").exists()
    assert (tmp_path / "ok" / "x").read_text() == "1"
    with pytest.raises(RuntimeError):
        with staged_directory(tmp_path / "fail") as stage:
            (stage / "x").write_text("1")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]
    with pytest.raises(BloodcellInputError, match="not an empty folder"):
        with staged_directory(tmp_path / "ok"):
            pass
    (tmp_path / "empty").mkdir()
    with staged_directory(tmp_path / "empty") as stage:
        (stage / "y").write_text("2")
    assert (tmp_path / "empty" / "y").read_text() == "2"
