"""Kinds of real third-party layers (issue: torchvision/timm layers profiled as "other" or as
plain depthwise/pointwise): analysis.profile finds them through the one kind table, and every
parameter of the model is in a row or in a normalisation layer."""

import math

import pytest
import torch
from torch import nn

import edgeconv
from edgeconv.analysis import kind_summary, profile

NORMS = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def _norm_params(model):
    return sum(p.numel() for m in model.modules() if isinstance(m, NORMS) for p in m.parameters(recurse=False))


def _rows_cover_every_parameter(model, prof):
    # each profiled unit is called once in these models: its row holds its parameters
    assert sum(r.params for r in prof.rows) + _norm_params(model) == prof.total_params


def test_torchvision_deform_conv2d_is_deform(torchvision, byom_models):
    model = byom_models.dcn()
    prof = profile(model, (1, 3, 224, 224))
    deform = [(n, m) for n, m in model.named_modules() if isinstance(m, torchvision.ops.DeformConv2d)]
    rows = {r.name: r for r in prof.rows}
    assert [rows[n].kind for n, _ in deform] == ["deform"] * len(deform)
    for name, m in deform:
        out = rows[name].output_shape
        # formula of kinds.py, from the module's attributes: out elems * C/g * kh*kw
        assert rows[name].detail["conv"] == math.prod(out) * (m.in_channels // m.groups) * 9
    assert "other" not in kind_summary(prof)
    _rows_cover_every_parameter(model, prof)


@pytest.mark.parametrize("convert", [False, True], ids=["timm", "converted"])
def test_timm_condconv_is_dynamic(timm, byom_models, convert):
    model = byom_models.efficientnet_cc(convert=False)
    experts = [m for m in model.modules() if isinstance(m, timm.layers.CondConv2d)]
    expected_params = sum(p.numel() for m in experts for p in m.parameters())
    if convert:
        model = edgeconv.convert(model)
    prof = profile(model, (1, 3, 224, 224))
    summary = kind_summary(prof)
    assert summary["dynamic"]["layers"] == len(experts) > 0
    assert summary["dynamic"]["params"] == expected_params
    assert "other" not in summary
    _rows_cover_every_parameter(model, prof)


def test_timm_mixed_conv2d_is_mixconv(timm):
    model = timm.create_model("mixnet_s", pretrained=False).eval()
    mixed = [m for m in model.modules() if isinstance(m, timm.layers.MixedConv2d)]
    prof = profile(model, (1, 3, 224, 224))
    summary = kind_summary(prof)
    assert summary["mixconv"]["layers"] == len(mixed) > 0
    assert summary["mixconv"]["params"] == sum(p.numel() for m in mixed for p in m.parameters())
    assert "other" not in summary
    _rows_cover_every_parameter(model, prof)
