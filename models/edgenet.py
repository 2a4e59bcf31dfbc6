"""EdgeNet: a small demo network that uses every convolution kind of ``docs/conv-kinds.md``.

It is the default model of ``edgeconv deploy``: ~0.3M parameters, a few ms at 1x3x64x64 on one
core, yet every kind appears at least once, so a single deployment exercises every export path,
runtime kernel and compiler pipeline. Layout for the default 64x64 input (``c`` = channels)::

    true conv 3x3/2 (3->16)                       TrueConv2d              32x32
    depthwise separable 3x3 (16->24)              DepthwiseSeparableConv2d
    shuffled group 1x1 (24->48, g=4)              ShuffledGroupConv2d (group conv + ChannelShuffle)
    depthwise 3x3/2 (48)                          DepthwiseConv2d         16x16
    group 1x1 (48->48, g=4)                       GroupConv2d
    MixConv 3/5/7 (48)              + residual    MixConv2d
    dilated 3x3, d=2 (48)           + residual    DilatedConv2d
    spatially separable 3x1/1x3 /2 (48->64)       SpatiallySeparableConv2d  8x8
    flattened 1x1/3x1/1x3 (64)      + residual    FlattenedConv2d
    HetConv P=4 (64)                + residual    HetConv2d
    deformable v1 3x3 (64)          + residual    DeformConv2d
    deformable v2 3x3 (64)          + residual    ModulatedDeformConv2d
    dynamic 1x1, K=4 (64->128)                    DynamicConv2d
    GDC 8x8 (128) -> 128-d                        GlobalDepthwiseConv2d   1x1
    linear (128 -> num_classes)

Every conv is followed by BatchNorm (+ ReLU except before a residual add / the GDC). The GDC
kernel is the final feature map, so the net is built for one input size (``input_size``,
default 64; any size >= 32).
"""

from __future__ import annotations

from torch import nn

from edgeconv.layers import (
    DeformConv2d,
    DepthwiseConv2d,
    DepthwiseSeparableConv2d,
    DilatedConv2d,
    DynamicConv2d,
    FlattenedConv2d,
    GlobalDepthwiseConv2d,
    GroupConv2d,
    HetConv2d,
    MixConv2d,
    ModulatedDeformConv2d,
    ShuffledGroupConv2d,
    SpatiallySeparableConv2d,
    TrueConv2d,
)

from ._blocks import bn_act, conv_out, make_divisible, spatial_pair
from ._registry import register_model

__all__ = ["EdgeNet", "edgenet", "EDGENET_KINDS"]

#: conv kinds (``create_conv2d`` names) used by EdgeNet -- all of them.
EDGENET_KINDS = (
    "true", "group", "depthwise", "gdc", "shuffled_group", "separable", "mixconv", "dilated",
    "deform", "deform_v2", "spatially_separable", "flattened", "hetconv", "dynamic",
)


class Residual(nn.Module):
    """``relu(x + bn(layer(x)))``."""

    def __init__(self, layer: nn.Module, channels: int) -> None:
        super().__init__()
        self.layer = layer
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(x + self.bn(self.layer(x)))


class EdgeNet(nn.Module):
    """See the module docstring. ``width_mult`` scales every width (kept multiples of 8)."""

    def __init__(self, input_size=64, num_classes: int = 1000, width_mult: float = 1.0) -> None:
        super().__init__()
        h, w = self.input_size = spatial_pair(input_size)
        if min(h, w) < 32:
            raise ValueError(f"EdgeNet needs an input of at least 32x32, got {h}x{w}")
        c = [make_divisible(v * width_mult) for v in (16, 24, 48, 64, 128)]
        c16, c24, c48, c64, c128 = c
        # three stride-2 stages, each a 3-tap conv with padding 1 (ceil(x / 2))
        for _ in range(3):
            h, w = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)
        self.gdc_size = (h, w)
        self.features = nn.Sequential(
            bn_act(TrueConv2d(3, c16, 3, stride=2, padding=1, bias=False), c16),
            bn_act(DepthwiseSeparableConv2d(c16, c24, 3), c24),
            bn_act(ShuffledGroupConv2d(c24, c48, 1, groups=4, bias=False), c48),
            bn_act(DepthwiseConv2d(c48, 3, stride=2, bias=False), c48),
            bn_act(GroupConv2d(c48, c48, 1, groups=4, bias=False), c48),
            Residual(MixConv2d(c48, (3, 5, 7), bias=False), c48),
            Residual(DilatedConv2d(c48, c48, 3, dilation=2, bias=False), c48),
            bn_act(SpatiallySeparableConv2d(c48, c64, 3, stride=2, bias=False), c64),
            Residual(FlattenedConv2d(c64, c64, 3, bias=False), c64),
            Residual(HetConv2d(c64, c64, 3, p=4), c64),
            Residual(DeformConv2d(c64, c64, 3, padding=1, bias=False), c64),
            Residual(ModulatedDeformConv2d(c64, c64, 3, padding=1, bias=False), c64),
            bn_act(DynamicConv2d(c64, c128, 1, num_kernels=4, bias=False), c128),
        )
        self.gdc = bn_act(GlobalDepthwiseConv2d(c128, self.gdc_size), c128, act=None)
        self.classifier = nn.Linear(c128, num_classes)

    def forward(self, x):
        return self.classifier(self.gdc(self.features(x)).flatten(1))


@register_model("edgenet", default_input=(1, 3, 64, 64), kinds=EDGENET_KINDS)
def edgenet(input_size=64, num_classes: int = 1000, width_mult: float = 1.0) -> nn.Module:
    """Small demo net (<0.5M params) using every conv kind; the default deploy model."""
    return EdgeNet(input_size=input_size, num_classes=num_classes, width_mult=width_mult)
