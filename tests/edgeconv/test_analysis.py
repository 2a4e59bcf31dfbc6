"""edgeconv.analysis: analytic MAC/parameter profile and SVD separable approximation.

Expected values are written out from the formulas (docs/conv-kinds.md and the MAC conventions of
edgeconv.analysis), not computed by the code under test. SVD references use numpy.linalg.svd in
float64; the layer computes in float64 too, so we allow 1e-10 relative (round-off of an SVD of a
5x5 matrix is ~1e-15; the margin covers LAPACK driver differences).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from edgeconv import layers as L
from edgeconv.analysis import ProfileResult, count_parameters, profile, separable_approximation


def _single(m: nn.Module, shape):
    res = profile(m, shape)
    assert isinstance(res, ProfileResult) and len(res.rows) == 1
    return res.rows[0]


def test_profile_plain_and_group_conv():
    row = _single(nn.Conv2d(8, 12, 3, padding=1), (2, 8, 10, 10))
    assert row.kind == "conv" and row.macs == 2 * 12 * 10 * 10 * 8 * 9
    assert row.params == 12 * 8 * 9 + 12 and row.output_shape == (2, 12, 10, 10)
    row = _single(L.GroupConv2d(8, 12, 3, groups=4), (1, 8, 10, 10))
    assert row.kind == "group" and row.macs == 12 * 100 * (8 // 4) * 9  # out_elems * C/g * kh*kw


def test_profile_depthwise_gdc_true_dilated_shuffle():
    assert _single(L.DepthwiseConv2d(6, 5, multiplier=2), (1, 6, 8, 8)).macs == 12 * 64 * 25
    gdc = _single(L.GlobalDepthwiseConv2d(6, 7), (1, 6, 7, 7))
    assert gdc.kind == "gdc" and gdc.macs == 6 * 49 and gdc.output_shape == (1, 6, 1, 1)
    assert _single(L.TrueConv2d(3, 4, 3), (1, 3, 6, 6)).macs == 4 * 16 * 3 * 9
    assert _single(L.DilatedConv2d(3, 4, 3, dilation=2), (1, 3, 6, 6)).macs == 4 * 36 * 3 * 9
    sh = _single(L.ChannelShuffle(2), (1, 4, 3, 3))
    assert sh.macs == 0 and sh.params == 0
    assert _single(L.ShuffledGroupConv2d(8, 8, 1, groups=4), (1, 8, 5, 5)).macs == 8 * 25 * 2


def test_profile_composites():
    b, c, n, h, k = 2, 6, 10, 8, 3
    row = _single(L.DepthwiseSeparableConv2d(c, n, k), (b, c, h, h))
    assert row.macs == b * h * h * (c * k * k + c * n)
    assert row.detail == {"depthwise": b * h * h * c * k * k, "pointwise": b * h * h * c * n}
    row = _single(L.MixConv2d(8, (3, 5)), (1, 8, 6, 6))
    assert row.macs == 36 * (4 * 9 + 4 * 25)
    # K x 1 then 1 x K: (6 instead of 9 per output for one channel)
    row = _single(L.SpatiallySeparableConv2d(1, 1, 3), (1, 1, 6, 6))
    assert row.macs == 36 * 6
    row = _single(L.SpatiallySeparableConv2d(4, 6, 3, stride=2), (1, 4, 8, 8))
    assert row.macs == (4 * 4 * 8) * 4 * 3 + (6 * 4 * 4) * 4 * 3  # mid [1,4,4,8], out [1,6,4,4]
    row = _single(L.FlattenedConv2d(c, n, 5), (1, c, h, h))
    assert row.macs == h * h * n * (c + 5 + 5)


def test_profile_hetconv_counts_true_params_and_executed_macs():
    c, n, k, p = 16, 8, 3, 4
    row = _single(L.HetConv2d(c, n, k, p=p), (1, c, 10, 10))
    assert row.params == n * (c // p) * k * k + n * (c - c // p)
    assert row.macs == 100 * n * ((c // p) * k * k + c)  # dense masked 1x1 runs C MACs


@pytest.mark.parametrize("modulated", [False, True])
def test_profile_deformable(modulated):
    b, c, o, h, k, og = 1, 4, 6, 8, 3, 2
    cls = L.ModulatedDeformConv2d if modulated else L.DeformConv2d
    row = _single(cls(c, o, k, offset_groups=og, groups=2), (b, c, h, h))
    kk, pos = k * k, h * h
    expected = {
        "conv": o * pos * (c // 2) * kk,
        "offset_conv": og * 2 * kk * pos * c * kk,
        "sampling": 4 * c * kk * pos,
    }
    if modulated:
        expected["mask_conv"] = og * kk * pos * c * kk
        expected["modulation"] = c * kk * pos
    assert row.detail == expected and row.macs == sum(expected.values())


def test_profile_dynamic():
    b, c, o, h, kn = 2, 8, 6, 5, 4
    m = L.DynamicConv2d(c, o, 3, num_kernels=kn, reduction=4)
    row = _single(m, (b, c, h, h))
    hidden = c // 4
    assert row.detail == {
        "attention": b * (c * h * h + c * hidden + hidden * kn),
        "kernel_mixing": b * kn * (o * c * 9 + o),
        "conv": b * o * h * h * c * 9,
    }


def test_profile_model_rows_totals_and_helpers():
    model = nn.Sequential(
        L.DepthwiseSeparableConv2d(3, 8),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        L.HetConv2d(8, 8, p=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
    model.train()
    res = profile(model, (1, 3, 6, 6))
    assert model.training  # mode restored
    # children convs of our layers are not listed separately
    assert [(r.name, r.kind) for r in res.rows] == [("0", "separable"), ("3", "hetconv"), ("6", "linear")]
    assert res.rows[2].macs == 8 * 5
    het_true = 8 * 4 * 9 + 8 * 4
    assert res.total_params == (3 * 9 + 3 * 8 + 8) + 16 + het_true + (8 * 5 + 5)  # BN counted
    assert res.total_params == count_parameters(model)
    assert res.total_macs == sum(r.macs for r in res.rows)
    dicts = res.as_dicts()
    json.dumps(dicts)
    assert dicts[1]["kind"] == "hetconv" and dicts[1]["output_shape"] == [1, 8, 6, 6]
    table = res.to_table()
    assert "hetconv" in table and "TOTAL" in table and f"{res.total_macs:,}" in table


def test_profile_bad_shape():
    with pytest.raises(ValueError, match="input_shape"):
        profile(nn.Conv2d(1, 1, 1), (1, 0, 4, 4))


# ----------------------------------------------------------------------------- separable approx
def test_rank1_kernel_has_zero_error():
    v, h = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    w = torch.outer(v, h)
    vert, hor, err = separable_approximation(w)
    assert vert.shape == (5, 1) and hor.shape == (1, 5)
    assert float(err) < 1e-7
    np.testing.assert_allclose((vert @ hor).numpy(), w.numpy(), rtol=1e-10, atol=1e-12)


def test_random_kernel_error_is_svd_tail_energy():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 5))
    s = np.linalg.svd(w, compute_uv=False)
    for r in (1, 2, 4, 5):
        vert, hor, err = separable_approximation(torch.from_numpy(w), rank=r)
        expected = np.sqrt((s[r:] ** 2).sum()) / np.linalg.norm(w)
        assert abs(float(err) - expected) <= 1e-10 * max(expected, 1.0)
        actual = np.linalg.norm(w - (vert @ hor).numpy()) / np.linalg.norm(w)
        assert abs(actual - expected) <= 1e-10 * max(expected, 1.0)


def test_batched_and_float32():
    w = torch.randn(4, 3, 3, 3)
    vert, hor, err = separable_approximation(w, rank=2)
    assert vert.shape == (4, 3, 3, 2) and hor.shape == (4, 3, 2, 3) and err.shape == (4, 3)
    assert vert.dtype == torch.float32
    s = np.linalg.svd(w.double().numpy(), compute_uv=False)  # [4, 3, 3]
    expected = np.sqrt((s[..., 2:] ** 2).sum(-1) / (s ** 2).sum(-1))
    np.testing.assert_allclose(err.numpy(), expected, rtol=1e-10)
    # factors cast to float32: reconstruction good to float32 round-off (~1e-7 relative)
    rel = ((w - vert @ hor).flatten(2).norm(dim=-1) / w.flatten(2).norm(dim=-1)).numpy()
    np.testing.assert_allclose(rel, expected, atol=1e-5)


def test_zero_kernel_and_bad_args():
    assert float(separable_approximation(torch.zeros(3, 3)).error) == 0.0
    with pytest.raises(ValueError, match=r"rank must be an int in \[1, min\(K_rows, K_cols\)\] = \[1, 3\]"):
        separable_approximation(torch.randn(3, 3), rank=4)
    with pytest.raises(ValueError, match="rank"):
        separable_approximation(torch.randn(3, 3), rank=0)
    with pytest.raises(ValueError, match="at least 2 dims"):
        separable_approximation(torch.randn(3))
    with pytest.raises(ValueError, match="floating point"):
        separable_approximation(torch.ones(3, 3, dtype=torch.int64))
