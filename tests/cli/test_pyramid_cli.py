"""``bloodcell pyramid``: any readable image becomes a tiled pyramidal OME-TIFF that opens lazily, level by level."""

from __future__ import annotations

import numpy as np
import tifffile

from napari_bloodcell.cli.main import main
from napari_bloodcell.core.io.pyramid import open_pyramid


def test_pyramid_converts_once_and_never_overwrites(tmp_path, capsys):
    image = (np.random.default_rng(0).random((2300, 1100, 3)) * 255).astype(np.uint8)  # levels stop at 1024 px
    src, out = tmp_path / "scan.tif", tmp_path / "scan.ome.tif"
    tifffile.imwrite(src, image)
    assert main(["pyramid", str(src), str(out), "--tile", "128", "--quiet"]) == 0
    with open_pyramid(out) as slide:
        assert len(slide.levels) >= 2 and tuple(slide.levels[0].shape) == image.shape
        assert (slide.levels[0].read(100, 300, 50, 250) == image[100:300, 50:250]).all()
    capsys.readouterr()
    assert main(["pyramid", str(src), str(out)]) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and len(err.strip().splitlines()) == 1
    assert main(["pyramid", str(src), str(tmp_path / "plain.tif")]) == 2  # the name must say OME-TIFF
