"""File > Open Sample: the deterministic synthetic smear (seed 0) and head volume (seed 0), as shipped in
``sample_data/``."""

from __future__ import annotations

from ..core.io.nifti import Volume
from .layers import LayerDataTuple, image_layer, shapes_layer


def make_smear_sample() -> list[LayerDataTuple]:
    from ..core.synthetic.samples import (
        sample_smear,
        smear_annotation_set,
        smear_file_name,
        smear_record,
    )

    smear = sample_smear(0, seed=0)
    aset = smear_annotation_set([smear_record(smear, smear_file_name(0))])
    boxes = shapes_layer(aset, name="synthetic smear boxes", stacked=False, source="synthetic sample, seed 0")
    return [image_layer(smear.image, name="synthetic smear"), boxes]


def make_mri_sample() -> list[LayerDataTuple]:
    from ..core.synthetic.mri import generate_head
    from .layers import volume_layers

    head = generate_head(seed=0)
    return volume_layers(Volume.from_array(head.image, head.affine, False), "synthetic T1") + volume_layers(
        Volume.from_array(head.labels, head.affine, True), "synthetic T1 labels", label_names=head.label_names
    )
