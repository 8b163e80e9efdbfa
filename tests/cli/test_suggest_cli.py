"""``bloodcell suggest``: the fields (or, with a classifier, the cells) to review next, as a table or JSON, from a
folder or a review project; bad requests are one line and exit status 2 (issue 19)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_bloodcell.cli.main import main
from napari_bloodcell.core.io.images import png_bytes


def images(folder, n):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"field_{i}.png").write_bytes(png_bytes(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)))
    return folder


def test_a_folder_ranked_as_json_and_as_a_table(tmp_path, capsys):
    pool = images(tmp_path / "pool", 3)
    assert main(["suggest", "--pool", str(pool), "--model", "classical", "-k", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["strategy"] == "combined" and data["unit"] == "field" and data["pool"] == 3
    assert [s["rank"] for s in data["suggestions"]] == [1, 2]
    assert all(0 <= s["uncertainty"] <= 1 for s in data["suggestions"])
    out = tmp_path / "next.json"
    assert main(["suggest", "--pool", str(pool), "--model", "classical", "--strategy", "random", "--out",
                 str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 of 3 fields suggested by random" in text and "field_" in text
    assert len(json.loads(out.read_text())["suggestions"]) == 3
    assert main(["suggest", "--pool", str(pool), "--model", "classical", "--out", str(out)]) == 2  # kept
    assert "refusing to overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--pool", "{tmp}/nowhere"], "no such folder"),
    (["--pool", "{tmp}/pool", "--case", "slide"], "--case needs a review project"),
    (["--pool", "{tmp}/pool", "--model", "{tmp}/none.pt"], "no such model file"),
    (["--pool", "{tmp}/pool", "--model", "{tmp}/junk.pt"], "junk.pt"),
    (["--pool", "{tmp}/empty"], "holds no readable images"),
    (["--pool", "{tmp}/pool", "--seed", "-1"], "must be 0 or more"),
])
def test_bad_requests_are_one_line(tmp_path, capsys, argv, message):
    images(tmp_path / "pool", 1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    try:
        rc = main(["suggest", "--model", "classical", *[a.format(tmp=tmp_path) for a in argv]])
    except SystemExit as exc:  # argparse's usage error: a usage line, then the one line
        rc = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and message in err[-1] and "Traceback" not in " ".join(err)
    assert len(err) == 1 or err[0].startswith("usage:")


def test_a_classifier_ranks_the_unreviewed_cells(tmp_path, capsys, sample_data):
    import torch

    from napari_bloodcell.core.inference.classify import FORMAT
    from napari_bloodcell.core.models.checkpoints import save_checkpoint
    from napari_bloodcell.core.models.classifiers import build_classifier

    torch.manual_seed(0)
    types = ["Neutrophil", "Eosinophil", "Lymphocyte", "Monocyte"]  # a white-cell typer: only white cells rank
    model = build_classifier("darknet_tiny", types, input_size=32)
    ckpt = tmp_path / "types.pt"
    save_checkpoint({"format": FORMAT, "arch": model.arch, "arch_args": {"input_size": 32},
                     "classes": model.classes, "model": {k: v.detach() for k, v in model.state_dict().items()}},
                    ckpt)
    smear = sample_data / "smear"
    assert main(["suggest", "--pool", str(smear / "JPEGImages"), "--boxes", str(smear / "annotations.json"),
                 "--model", str(ckpt), "-k", "5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    from napari_bloodcell.core.io.formats import read_annotations

    truth = read_annotations(smear / "annotations.json")
    white = sum(int(np.isin(np.array(truth.classes)[r.labels], types).sum()) for r in truth.images)
    assert data["unit"] == "cell" and data["pool"] == white and len(data["suggestions"]) == 5
    picked = [(s["name"], s["cell_id"]) for s in data["suggestions"]]
    assert len(set(picked)) == 5 and all(s["label"] in model.classes for s in data["suggestions"])
    assert main(["suggest", "--pool", str(smear / "JPEGImages"), "--model", str(ckpt)]) == 2
    assert "needs boxes" in capsys.readouterr().err
