"""HighRes3DNet's layout against the thesis's table 6.1, freezing by stage name, and the classifier swap."""

from __future__ import annotations

import pytest
import torch

from napari_bloodcell.core.errors import BloodcellInputError
from napari_bloodcell.core.models.highres3dnet import (
    STAGES,
    THESIS_TABLE_6_1,
    HighRes3DNet,
    conv_kernel_parameters,
    count_trainable,
    freeze_stages,
    keep_frozen_in_eval,
    receptive_field,
    replace_classifier,
    stage_parameters,
    thesis_comparison,
)
from tests.core.volumes import TINY


def test_convolution_weights_match_the_thesis_layout_and_total_is_within_half_a_percent():
    model = HighRes3DNet(in_channels=2, n_classes=2)
    kernels = conv_kernel_parameters(model)
    # 3x3x3 convolutions: 2->16; six 16->16; 16->32 + five 32->32; 32->64 + five 64->64; 1x1x1 64->80 and 80->2
    assert kernels == {"conv_0": 2 * 16 * 27, "res_1": 6 * 16 * 16 * 27, "res_2": (16 * 32 + 5 * 32 * 32) * 27,
                       "res_3": (32 * 64 + 5 * 64 * 64) * 27, "conv_1": 64 * 80, "conv_2": 80 * 2}
    for stage in STAGES:  # the thesis's count is the same weights plus its per-channel normalisation variables
        assert THESIS_TABLE_6_1[stage] > kernels[stage]
    total, thesis = sum(stage_parameters(model).values()), sum(THESIS_TABLE_6_1.values())
    assert thesis == 812_312 and total == 809_378
    assert abs(total - thesis) / thesis < 0.005
    rows = thesis_comparison(model)
    assert [r["stage"] for r in rows] == list(STAGES)
    assert receptive_field(model) == 87  # 1 + 2 (conv_0) + 6 x 2 x (1 + 2 + 4)


def test_output_keeps_the_input_size_and_bad_inputs_are_named():
    model = HighRes3DNet(1, 3, **TINY).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 11, 13, 9))
    assert out.shape == (1, 3, 11, 13, 9)
    with pytest.raises(BloodcellInputError, match=r"expects \(N, 1, D, H, W\)"):
        model(torch.randn(1, 2, 8, 8, 8))
    with pytest.raises(BloodcellInputError, match="at least 1 input channel and 2 classes"):
        HighRes3DNet(1, 1)
    with pytest.raises(BloodcellInputError, match="unknown activation"):
        HighRes3DNet(1, 2, activation="tanh")


def test_frozen_stages_keep_weights_and_batch_norm_statistics_after_a_training_step():
    torch.manual_seed(0)
    model = HighRes3DNet(1, 2, **TINY)
    frozen = freeze_stages(model, ["conv_0", "res_1"])
    assert frozen == ["conv_0", "res_1"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    keep_frozen_in_eval(model)
    x, y = torch.randn(2, 1, 12, 12, 12), torch.randint(0, 2, (2, 12, 12, 12))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = model.state_dict()
    for key in before:
        same = torch.equal(before[key], after[key])
        if key.startswith(("conv_0.", "res_1.")):
            assert same, f"{key} changed although its stage is frozen"
        elif key.endswith("weight") and key.startswith(("res_2.", "res_3.", "conv_2.")):
            assert not same, f"{key} did not learn"
    assert count_trainable(model) == sum(p.numel() for n, p in model.named_parameters()
                                         if not n.startswith(("conv_0.", "res_1.")))
    with pytest.raises(BloodcellInputError, match="freezable stages"):
        freeze_stages(model, ["conv_2"])


def test_replacing_the_classifier_keeps_every_other_weight():
    model = HighRes3DNet(1, 3, **TINY)
    body = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("conv_2")}
    replace_classifier(model, 5)
    assert model.conv_2.out_channels == 5 and model.n_classes == 5
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in body.items())
    assert model(torch.randn(1, 1, 8, 8, 8)).shape[1] == 5
