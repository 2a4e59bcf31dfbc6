"""MobileNetV2 with dynamic convolution in the inverted residuals.

Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018; Chen et al.,
"Dynamic Convolution: Attention over Convolution Kernels", CVPR 2020 (their DY-MobileNetV2
replaces the convolutions of the blocks by dynamic ones). Here the 1x1 expansion and the 1x1
linear projection of every inverted residual are :class:`~edgeconv.layers.DynamicConv2d`
(``num_kernels`` kernels mixed per sample); the 3x3 depthwise stays a static
:class:`~edgeconv.layers.DepthwiseConv2d`, the stem and the 1x1 head are standard convs.
"""

from __future__ import annotations

from torch import nn

from edgeconv.layers import DepthwiseConv2d, DynamicConv2d

from ._blocks import conv_bn_act, make_divisible
from ._registry import register_model

__all__ = ["DynamicInvertedResidual", "MobileNetV2Dynamic", "mobilenetv2_dynamic"]

# t (expansion), c (output channels), n (repeats), s (first stride) -- the paper's Table 2
_SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class DynamicInvertedResidual(nn.Module):
    """dynamic 1x1 expand -> BN/ReLU6 -> depthwise 3x3 -> BN/ReLU6 -> dynamic 1x1 project -> BN."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int, num_kernels: int = 4) -> None:
        super().__init__()
        hidden = in_ch * expand
        self.use_residual = stride == 1 and in_ch == out_ch
        layers = []
        if expand != 1:
            layers += [
                DynamicConv2d(in_ch, hidden, 1, num_kernels=num_kernels, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU6(),
            ]
        layers += [
            DepthwiseConv2d(hidden, 3, stride=stride, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            DynamicConv2d(hidden, out_ch, 1, num_kernels=num_kernels, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.use_residual else y


class MobileNetV2Dynamic(nn.Module):
    """DY-MobileNetV2 classifier (any input >= 32x32: global average pooling before the FC)."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, num_kernels: int = 4,
                 dropout: float = 0.2) -> None:
        super().__init__()
        in_ch = make_divisible(32 * width_mult)
        last_ch = make_divisible(1280 * max(1.0, width_mult))
        features = [conv_bn_act(3, in_ch, 3, 2, act=nn.ReLU6)]
        for t, c, n, s in _SETTINGS:
            out_ch = make_divisible(c * width_mult)
            for i in range(n):
                features.append(DynamicInvertedResidual(in_ch, out_ch, s if i == 0 else 1, t, num_kernels))
                in_ch = out_ch
        features.append(conv_bn_act(in_ch, last_ch, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last_ch, num_classes))

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_model("mobilenetv2_dynamic", default_input=(1, 3, 224, 224), kinds=("dynamic", "depthwise"))
def mobilenetv2_dynamic(num_classes: int = 1000, width_mult: float = 1.0, num_kernels: int = 4) -> nn.Module:
    """MobileNetV2 with DynamicConv2d (K=4) 1x1 convs in the inverted residuals."""
    return MobileNetV2Dynamic(num_classes=num_classes, width_mult=width_mult, num_kernels=num_kernels)
