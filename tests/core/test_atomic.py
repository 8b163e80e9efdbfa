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


_HOLDER = """
import sys, time
from napari_bloodcell.core.atomic import folder_lock
with folder_lock(sys.argv[1], "the test folder"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_folder_lock_refuses_a_second_writer_and_dies_with_its_process(tmp_path):
    import subprocess
    import sys

    from napari_bloodcell.core.atomic import folder_lock

    folder = tmp_path / "dataset"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BloodcellInputError, match="the dataset is being changed by another process"):
            with folder_lock(folder, "the dataset"):
                pass
        holder.kill()  # SIGKILL (TerminateProcess on Windows): a killed export never leaves the folder locked
        holder.wait(timeout=30)
    finally:
        holder.kill()
    with folder_lock(folder, "the dataset"):
        with pytest.raises(BloodcellInputError, match="another process"):  # one writer, in this process too
            with folder_lock(folder, "the dataset"):
                pass
    with folder_lock(folder, "the dataset"):  # released on leaving, also after an error inside
        pass
    with pytest.raises(RuntimeError):
        with folder_lock(folder, "the dataset"):
            raise RuntimeError("boom")
    with folder_lock(folder, "the dataset"):
        pass
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]


def test_publish_links_a_synced_file_into_place_and_never_overwrites(tmp_path):
    from napari_bloodcell.core.atomic import publish

    tmp = tmp_path / ".a.txt.x.tmp"
    tmp.write_text("new")
    assert publish(tmp, tmp_path / "a.txt") == tmp_path / "a.txt"
    assert (tmp_path / "a.txt").read_text() == "new"
    (tmp_path / "b.txt").write_text("mine")
    with pytest.raises(BloodcellInputError, match="refusing to overwrite"):
        publish(tmp, tmp_path / "b.txt")
    assert (tmp_path / "b.txt").read_text() == "mine"
