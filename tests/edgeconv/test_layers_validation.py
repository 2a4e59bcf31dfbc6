"""Bad input raises ValueError naming the argument and the expected value."""

from __future__ import annotations

import pytest
import torch

from edgeconv import layers as L

BAD_CONSTRUCTORS = [
    # channels not divisible by groups / p / offset_groups
    (lambda: L.GroupConv2d(6, 8, 3, groups=4), r"in_ch \(6\) must be divisible by groups \(4\)"),
    (lambda: L.GroupConv2d(8, 6, 3, groups=4), r"out_ch \(6\) must be divisible by groups \(4\)"),
    (lambda: L.ShuffledGroupConv2d(8, 6, 1, groups=4), r"out_ch .* groups"),
    (lambda: L.HetConv2d(6, 8, 3, p=4), r"in_ch \(6\) must be divisible by p \(4\)"),
    (lambda: L.HetConv2d(8, 6, 3, p=4), r"out_ch \(6\) must be divisible by p \(4\)"),
    (lambda: L.HetConv2d(8, 8, 3, p=4, layout="zigzag"), r"layout must be one of \('block', 'paper'\)"),
    (lambda: L.DeformConv2d(6, 8, groups=4), r"in_ch .* groups"),
    (lambda: L.DeformConv2d(6, 8, offset_groups=4), r"in_ch .* offset_groups"),
    (lambda: L.DynamicConv2d(6, 8, 3, groups=4), r"in_ch .* groups"),
    # non-positive sizes
    (lambda: L.TrueConv2d(0, 4, 3), r"in_ch must be a positive int"),
    (lambda: L.TrueConv2d(4, 4, 0), r"kernel_size must be positive"),
    (lambda: L.TrueConv2d(4, 4, 3, padding=-1), r"padding must be non-negative"),
    (lambda: L.GroupConv2d(4, 4, 3, groups=0), r"groups must be a positive int"),
    (lambda: L.DepthwiseConv2d(4, 3, multiplier=0), r"multiplier must be a positive int"),
    (lambda: L.DepthwiseConv2d(4, 3, stride=0), r"stride must be positive"),
    (lambda: L.GlobalDepthwiseConv2d(4, (0, 3)), r"spatial_size must be positive"),
    (lambda: L.ChannelShuffle(0), r"groups must be a positive int"),
    (lambda: L.DilatedConv2d(4, 4, 3, dilation=0), r"dilation must be positive"),
    (lambda: L.DynamicConv2d(4, 4, 3, num_kernels=0), r"num_kernels must be a positive int"),
    (lambda: L.DynamicConv2d(4, 4, 3, temperature=0.0), r"temperature must be a finite number > 0"),
    (lambda: L.SpatiallySeparableConv2d(4, 4, 3, mid_ch=0), r"mid_ch must be a positive int"),
    (lambda: L.MixConv2d(4, ()), r"kernel_sizes must be a non-empty"),
    (lambda: L.MixConv2d(2, (3, 5, 7)), r"channels \(2\) too small for 3 kernel groups"),
    (lambda: L.MixConv2d(8, (3, 5), split="golden"), r"split must be one of"),
    (lambda: L.TrueConv2d(4, 4, (3, 3, 3)), r"kernel_size must be an int or a pair"),
    (lambda: L.TrueConv2d(4, 4, 3, stride=True), r"stride must be an int or a pair"),
    # even kernels where "same" padding is asked
    (lambda: L.GroupConv2d(4, 4, 2, groups=2), r"kernel_size must be odd"),
    (lambda: L.DepthwiseConv2d(4, 4), r"kernel_size must be odd"),
    (lambda: L.DilatedConv2d(4, 4, 4), r"kernel_size must be odd"),
    (lambda: L.DepthwiseSeparableConv2d(4, 4, 2), r"kernel_size must be odd"),
    (lambda: L.ShuffledGroupConv2d(4, 4, 2, groups=2), r"kernel_size must be odd"),
    (lambda: L.MixConv2d(8, (3, 4)), r"kernel_sizes\[i\] must be odd"),
    (lambda: L.SpatiallySeparableConv2d(4, 4, 2), r"kernel_size must be odd"),
    (lambda: L.FlattenedConv2d(4, 4, 4), r"kernel_size must be odd"),
    (lambda: L.HetConv2d(4, 4, 2, p=2), r"kernel_size must be odd"),
    (lambda: L.DynamicConv2d(4, 4, 2), r"kernel_size must be odd"),
    # factory
    (lambda: L.create_conv2d("octave", 4, 4), r"unknown conv kind 'octave'; expected one of: conv, true, group"),
    (lambda: L.create_conv2d("mixconv", 4, 8), r"out_ch must equal in_ch \(4\)"),
    (lambda: L.create_conv2d("gdc", 4, 8, spatial_size=7), r"out_ch must equal in_ch"),
    (lambda: L.create_conv2d("shuffle", 4, 4), r"needs groups"),
    (lambda: L.create_conv2d("depthwise", 4, 6), r"out_ch \(6\) must be a multiple of in_ch \(4\)"),
    (lambda: L.create_conv2d("depthwise", 4, 6, multiplier=2), r"out_ch must equal in_ch \* multiplier = 8"),
    (lambda: L.create_conv2d("conv", 4, 4, kernel_size=2), r"kernel_size must be odd"),
    # from_conv2d
    (lambda: L.SpatiallySeparableConv2d.from_conv2d(torch.randn(2, 3, 3, 3), rank=7), r"rank must be <= min\(C\*K, N\*K\) = 6"),
    (lambda: L.SpatiallySeparableConv2d.from_conv2d(torch.nn.Conv2d(2, 2, 3, padding=1, groups=2)), r"groups=1"),
    (lambda: L.SpatiallySeparableConv2d.from_conv2d(torch.nn.Conv2d(2, 2, 3)), r'"same" padding'),
    (lambda: L.SpatiallySeparableConv2d.from_conv2d(torch.nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")), r"padding_mode='zeros'"),
]


@pytest.mark.parametrize("make,match", BAD_CONSTRUCTORS)
def test_bad_constructor_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


FORWARD_LAYERS = [
    lambda: L.TrueConv2d(4, 4, 3),
    lambda: L.GroupConv2d(4, 4, 3, groups=2),
    lambda: L.DepthwiseConv2d(4),
    lambda: L.GlobalDepthwiseConv2d(4, 6),
    lambda: L.ShuffledGroupConv2d(4, 4, 1, groups=2),
    lambda: L.DepthwiseSeparableConv2d(4, 4),
    lambda: L.MixConv2d(4, (3, 5)),
    lambda: L.DilatedConv2d(4, 4),
    lambda: L.DeformConv2d(4, 4),
    lambda: L.ModulatedDeformConv2d(4, 4),
    lambda: L.SpatiallySeparableConv2d(4, 4),
    lambda: L.FlattenedConv2d(4, 4),
    lambda: L.HetConv2d(4, 4, p=2),
    lambda: L.DynamicConv2d(4, 4, 3),
]


@pytest.mark.parametrize("make", FORWARD_LAYERS)
def test_forward_wrong_rank_and_channels(make):
    m = make()
    with pytest.raises(ValueError, match=r"input must be a 4-D tensor \[N, C, H, W\], got shape \(4, 6, 6\)"):
        m(torch.randn(4, 6, 6))
    with pytest.raises(ValueError, match=r"input channels \(dim 1\) must be 4, got 3"):
        m(torch.randn(1, 3, 6, 6))


def test_channel_shuffle_forward_errors():
    with pytest.raises(ValueError, match="4-D"):
        L.ChannelShuffle(2)(torch.randn(4, 6))
    with pytest.raises(ValueError, match=r"input channels \(5\) must be divisible by groups \(2\)"):
        L.ChannelShuffle(2)(torch.randn(1, 5, 2, 2))


def test_gdc_forward_wrong_spatial_size():
    with pytest.raises(ValueError, match=r"spatial_size=\(6, 6\), got \(5, 6\)"):
        L.GlobalDepthwiseConv2d(4, 6)(torch.randn(1, 4, 5, 6))
