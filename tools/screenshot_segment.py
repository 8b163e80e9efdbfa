"""Screenshots of Plugins ▸ Segment volume on the synthetic T1 head (a pitched, anisotropic affine).

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python tools/screenshot_segment.py [--model SEGMENTER.pt]

Without ``--model`` a narrow HighRes3DNet is first trained on six other synthetic heads (seeds 10-15, about 5 min on
two CPU cores) and kept in ``/tmp/bloodcell-shot/synthetic_heads.pt``. The sample volume is opened with the
plugin's reader, segmented by the widget in the background, and shown on the slice with the most hippocampus
(segment-volume.png); a brush stroke then removes part of the right hippocampus, and the per-label volumes follow
(segment-corrected.png). The label map is saved with the plugin's writer and its affine compared with the image's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
SAMPLE = ROOT / "sample_data" / "mri" / "synthetic_t1_000.nii.gz"
SCRATCH = Path("/tmp/bloodcell-shot")


def pump(app, seconds: float = 0.5) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def close_toasts(viewer) -> None:
    """napari's start-up notices (e.g. the PyQt5 deprecation) would cover the canvas."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()


def train_model() -> Path:
    from napari_bloodcell.core.progress import drain
    from napari_bloodcell.core.synthetic.samples import write_samples
    from napari_bloodcell.core.training.segmentation import (
        SegmenterTrainConfig,
        train_segmenter,
    )

    out = SCRATCH / "synthetic_heads.pt"
    if out.is_file():
        return out
    data = SCRATCH / "heads"
    if not data.exists():
        drain(write_samples("mri", data, seed=10, count=6))
    drain(train_segmenter(SegmenterTrainConfig(
        data=data, out=out, iterations=400, val_every=200, patch=(32, 32, 32), val_patch=(64, 64, 64),
        arch_args={"features": [8, 16, 16], "head_features": 16}, lr=3e-3, device="cpu", val_fraction=0.2)),
        lambda e: print(e) if e.get("phase") == "val" else None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path)
    args = parser.parse_args()
    SCRATCH.mkdir(exist_ok=True)
    model = args.model or train_model()
    os.environ["BLOODCELL_HOME"] = tempfile.mkdtemp(prefix="bloodcell-shot-")

    import napari
    import nibabel as nib

    from napari_bloodcell.gui._writer import write_labels
    from napari_bloodcell.gui.widgets.detect import CHECKPOINT
    from napari_bloodcell.gui.widgets.segment import SegmentWidget

    app = napari.qt.get_qapp()
    viewer = napari.Viewer(title="napari-bloodcell")
    viewer.window._qt_window.resize(1560, 980)
    viewer.open(str(SAMPLE), plugin="napari-bloodcell")
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment volume", area="right")
    widget.model.value = CHECKPOINT
    widget.checkpoint.value = model
    widget.device.value = "cpu"
    widget.run()
    while widget.worker is not None:
        pump(app, 0.2)
    print(widget.status.value)
    labels = viewer.layers[-1]
    data = np.asarray(labels.data)
    # a coronal view (the voxel axes are R, A, S): rows superior-inferior, columns right-left, the slider
    # anterior-posterior, on the slice with the most hippocampus of both sides
    viewer.dims.order = (1, 2, 0)
    viewer.scene.camera.orientation2d = ("up", "right")
    best = int(np.argmax(np.minimum((data == 1).sum(axis=(0, 2)), (data == 2).sum(axis=(0, 2)))))
    viewer.dims.set_current_step(1, best)
    viewer.reset_view()
    pump(app, 1.0)
    print(widget.volumes.value)
    close_toasts(viewer)
    viewer.screenshot(str(OUT / "segment-volume.png"), canvas_only=False)
    # a correction: erase the right hippocampus's voxels on this slice (a pathologist disagreeing with the tail)
    before = widget.volumes.value
    xs, zs = np.nonzero(data[:, best, :] == 2)
    labels.brush_size = 3
    labels.n_edit_dimensions = 2
    for x, z in zip(xs, zs):
        if z <= np.median(zs):  # the lower half of the right hippocampus on this slice
            labels.paint((int(x), best, int(z)), 0, refresh=False)
    labels.refresh()
    pump(app, 1.0)
    print("before:", before.replace("\n", "; "), "| after:", widget.volumes.value.replace("\n", "; "))
    close_toasts(viewer)
    viewer.screenshot(str(OUT / "segment-corrected.png"), canvas_only=False)
    saved = SCRATCH / "segment-corrected.nii.gz"
    saved.unlink(missing_ok=True)
    write_labels(str(saved), labels.data, {"metadata": labels.metadata, "scale": labels.scale,
                                           "translate": labels.translate, "name": labels.name})
    same = np.allclose(nib.load(str(saved)).affine, nib.load(str(SAMPLE)).affine)
    print(f"saved {saved}; affine equal to the image's: {same}")
    viewer.close()


if __name__ == "__main__":
    main()
