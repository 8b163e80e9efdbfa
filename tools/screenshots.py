"""Take the documentation screenshots as a user sees them (run under xvfb-run; writes docs/images/*.png).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python tools/screenshots.py [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def snap(viewer, name: str) -> None:
    import napari

    viewer.window._qt_window.resize(1400, 860)
    for _ in range(3):
        napari.qt.get_qapp().processEvents()
    viewer.reset_view()
    napari.qt.get_qapp().processEvents()
    viewer.screenshot(str(OUT / name), canvas_only=False)
    print("wrote", OUT / name)


def centre_on_labels(viewer, labels) -> None:
    """An axial view (slicing along the third voxel axis) through the middle of the labelled voxels."""
    viewer.dims.order = (2, 1, 0)
    idx = np.argwhere(labels.data > 0).mean(0)
    world = np.asarray(labels.data_to_world(idx))
    viewer.dims.current_step = tuple(
        int(round((w - r[0]) / r[2])) for w, r in zip(world, viewer.dims.range)
    )


def main() -> None:
    import napari

    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)

    viewer = napari.Viewer(title="napari-bloodcell")
    viewer.open_sample("napari-bloodcell", "smear")
    snap(viewer, "synthetic-smear.png")
    viewer.layers.clear()
    viewer.open_sample("napari-bloodcell", "mri")
    centre_on_labels(viewer, viewer.layers[-1])
    snap(viewer, "synthetic-mri.png")
    if args.shared.is_dir():
        viewer.layers.clear()
        viewer.open(str(args.shared / "bccd" / "Annotations" / "BloodImage_00000.xml"), plugin="napari-bloodcell")
        snap(viewer, "bccd-boxes.png")
        viewer.layers.clear()
        root = args.shared / "msd_hippocampus"
        viewer.open(str(root / "imagesTr" / "hippocampus_001.nii.gz"), plugin="napari-bloodcell")
        viewer.open(str(root / "labelsTr" / "hippocampus_001.nii.gz"), plugin="napari-bloodcell")
        centre_on_labels(viewer, viewer.layers[-1])
        snap(viewer, "msd-hippocampus.png")
    viewer.close()


if __name__ == "__main__":
    main()
