"""``bloodcell --help`` and ``bloodcell info`` start without torch: the parser's choices come from torch-free name
lists, which must list exactly what the real architecture tables and training recipes hold."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from napari_bloodcell.core import choices
from napari_bloodcell.core.io.images import png_bytes


def test_the_name_lists_match_the_real_tables():
    from napari_bloodcell.core.models import classifiers, detectors
    from napari_bloodcell.core.training import classification

    assert choices.DETECTOR_ARCHS == tuple(detectors.ARCHITECTURES)
    assert choices.CLASSIFIER_ARCHS == tuple(classifiers.ARCHITECTURES)
    assert choices.CLASSIFIER_MODES == tuple(classification.MODES)
    assert choices.CLASSIFIER_OPTIMIZERS == tuple(classification.OPTIMIZERS)
    assert choices.CLASSIFIER_BALANCE == tuple(classification.BALANCE)


def _heavy_modules_after(code: str) -> list[str]:
    probe = code + "\nimport sys, json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & " \
                   "{'torch', 'torchvision', 'napari', 'qtpy'})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_building_the_parser_imports_no_torch():
    assert _heavy_modules_after("from napari_bloodcell.cli.main import build_parser; build_parser()") == []


def test_bloodcell_info_and_help_import_no_torch(tmp_path):
    image = tmp_path / "field.png"
    image.write_bytes(png_bytes(np.zeros((8, 8, 3), np.uint8)))
    run = ("import contextlib, io\nfrom napari_bloodcell.cli.main import main\n"
           "with contextlib.redirect_stdout(io.StringIO()):\n")
    assert _heavy_modules_after(run + f"    assert main(['info', {str(image)!r}]) == 0") == []
    help_run = run + "    try:\n        main(['--help'])\n    except SystemExit:\n        pass"
    assert _heavy_modules_after(help_run) == []
    train_help = run + "    try:\n        main(['train', 'classifier', '--help'])\n    except SystemExit:\n        pass"
    assert _heavy_modules_after(train_help) == []


def test_the_parser_still_offers_every_architecture(capsys):
    from napari_bloodcell.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(["train", "detector", "--data", "d", "--arch", "yolov3", "--out", "m.pt"])
    assert args.arch == "yolov3"
    args = parser.parse_args(["train", "classifier", "--data", "d", "--arch", "densenet121", "--out", "m.pt",
                              "--mode", "discriminative", "--optimizer", "adam", "--balance", "sampler"])
    assert (args.arch, args.mode, args.optimizer, args.balance) == ("densenet121", "discriminative", "adam",
                                                                    "sampler")
