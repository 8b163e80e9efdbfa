"""Archives on a Dask cluster (``--workers N``, ``--scheduler ADDRESS``): the same results as one process, models
loaded once per worker, per-image results kept so a rerun after a failure or a kill finishes the job."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from napari_bloodcell.cli.main import main
from napari_bloodcell.core.io.coco import read_coco
from napari_bloodcell.core.scale.parts import parts_folder


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def smears(sample_data, tmp_path):
    """Four fields (the two sample smears under two names each)."""
    folder = tmp_path / "fields"
    folder.mkdir()
    for src in sorted((sample_data / "smear" / "JPEGImages").glob("*.png")):
        for k in range(2):
            shutil.copy(src, folder / f"{src.stem}_{k}.png")
    return folder


def boxes_by_image(path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    aset = read_coco(path)
    return {r.file_name.split("/")[-1]: (r.boxes, r.labels) for r in aset.images}


def test_detect_on_a_cluster_matches_one_process_and_loads_the_model_once_per_worker(smears, tmp_path, capsys,
                                                                                     dask_scheduler):
    from distributed import Client

    from napari_bloodcell.core.scale.archive import model_loads

    code, _, err = run(capsys, "detect", smears, "--out", tmp_path / "one.json", "--device", "cpu", "--quiet")
    assert code == 0, err
    code, out, err = run(capsys, "detect", smears, "--out", tmp_path / "many.json", "--device", "cpu",
                         "--scheduler", dask_scheduler)
    assert code == 0, err
    assert "Dask cluster" in out and not parts_folder(tmp_path / "many.json").exists()
    one, many = boxes_by_image(tmp_path / "one.json"), boxes_by_image(tmp_path / "many.json")
    assert set(one) == set(many) and len(one) == 4
    for name in one:
        assert np.allclose(one[name][0], many[name][0], atol=1e-3) and (one[name][1] == many[name][1]).all()
    with Client(dask_scheduler, set_as_default=False) as client:
        loads = client.run(model_loads)
    per_worker = [counts.get("detector", 0) for counts in loads.values()]
    assert sum(per_worker) >= 1 and max(per_worker) == 1  # four images, at most one load in each worker


def test_a_bad_image_keeps_the_finished_ones_and_a_rerun_finishes(smears, tmp_path, capsys):
    bad = smears / "zz_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    out = tmp_path / "pred.json"
    code, _, err = run(capsys, "detect", smears, "--out", out, "--device", "cpu", "--workers", 1, "--quiet")
    assert code == 2 and "zz_broken.png" in err and "1 of 5 image(s) failed" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    parts = parts_folder(out)
    assert len(list(parts.glob("*.json"))) == 5  # four results and the job's settings
    code, _, err = run(capsys, "detect", smears, "--out", out, "--device", "cpu", "--workers", 1, "--score", 0.5)
    assert code == 2 and "other settings" in err  # never mixes two runs' results
    bad.unlink()
    code, _, err = run(capsys, "detect", smears, "--out", out, "--device", "cpu", "--workers", 1)
    assert code == 0, err
    assert "4 of 4 image(s) already done" in err and "starting" not in err  # nothing left to run: no cluster
    assert len(read_coco(out).images) == 4 and not parts.exists()


@pytest.mark.parametrize("argv, message", [
    (["--workers", "0"], "--workers must be 1.."),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not both"),
    (["--scheduler", "tcp://127.0.0.1:9"], "cannot reach the Dask scheduler"),
])
def test_cluster_arguments_are_checked(smears, tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setenv("BLOODCELL_DASK_CONNECT_S", "1")
    code, _, err = run(capsys, "detect", smears, "--out", tmp_path / "p.json", "--model", "classical", "--quiet", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p.json").exists()


def test_a_damaged_part_is_redone_and_a_folder_not_ours_is_never_taken_or_deleted(smears, tmp_path):
    from napari_bloodcell.core.errors import BloodcellInputError
    from napari_bloodcell.core.scale.parts import PartStore, item_identity, remove_parts

    mine = parts_folder(tmp_path / "y.json")
    mine.mkdir()
    (mine / "notes.txt").write_text("a person's file")
    with pytest.raises(BloodcellInputError, match="not made by a bloodcell archive job"):
        PartStore(tmp_path / "y.json", {"verb": "detect"})

    store = PartStore(tmp_path / "x.json", {"verb": "detect"})
    identity = item_identity(next(smears.iterdir()))
    store.save(identity, {"record": {"boxes": [[0, 0, 1, 1]]}})
    assert store.load(identity) is not None
    store.part_path(identity).write_text("{not json")
    assert store.load(identity) is None
    store.part_path(identity).write_text(json.dumps({"identity": "someone else", "result": {}}))
    assert store.load(identity) is None
    store.part_path(identity).write_text("[" * 100_000 + "]" * 100_000)  # nesting deep enough to crash a parser
    assert store.load(identity) is None
    (store.folder / "kept.txt").write_text("not ours")
    remove_parts(tmp_path / "x.json")
    assert [p.name for p in store.folder.iterdir()] == ["kept.txt"]
