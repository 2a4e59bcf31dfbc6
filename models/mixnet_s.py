"""MixNet-S (Tan & Le, "MixConv: Mixed Depthwise Convolutional Kernels", BMVC 2019).

Every depthwise conv is a :class:`~edgeconv.layers.MixConv2d` (equal channel split over kernel
sizes 3..11; a single size is a plain depthwise conv). The paper's "grouped" 1x1 expansion and
projection convs (two channel groups, ``a1.1`` / ``p1.1`` in the reference block strings) are
:class:`~edgeconv.layers.GroupConv2d` with ``groups=2``. Squeeze-and-excitation on the later
stages, ReLU in the early stages and Swish after, as in the reference ``mixnet_s`` definition.
"""

from __future__ import annotations

from torch import nn

from edgeconv.layers import GroupConv2d, MixConv2d

from ._blocks import conv_bn_act, make_divisible
from ._registry import register_model

__all__ = ["MixBlock", "MixNet", "mixnet_s"]

# (kernel sizes, expansion, out channels, repeats, stride, exp groups, proj groups, se ratio, swish)
_MIXNET_S = [
    ((3,), 1, 16, 1, 1, 1, 1, 0.0, False),
    ((3,), 6, 24, 1, 2, 2, 2, 0.0, False),
    ((3,), 3, 24, 1, 1, 2, 2, 0.0, False),
    ((3, 5, 7), 6, 40, 1, 2, 1, 1, 0.5, True),
    ((3, 5), 6, 40, 3, 1, 2, 2, 0.5, True),
    ((3, 5, 7), 6, 80, 1, 2, 1, 2, 0.25, True),
    ((3, 5), 6, 80, 2, 1, 1, 2, 0.25, True),
    ((3, 5, 7), 6, 120, 1, 1, 2, 2, 0.5, True),
    ((3, 5, 7, 9), 3, 120, 2, 1, 2, 2, 0.5, True),
    ((3, 5, 7, 9, 11), 6, 200, 1, 2, 1, 1, 0.5, True),
    ((3, 5, 7, 9), 6, 200, 2, 1, 1, 2, 0.5, True),
]


def _pointwise(in_ch: int, out_ch: int, groups: int) -> nn.Module:
    if groups > 1 and in_ch % groups == 0 and out_ch % groups == 0:
        return GroupConv2d(in_ch, out_ch, 1, groups, bias=False)
    return nn.Conv2d(in_ch, out_ch, 1, bias=False)


class SqueezeExcite(nn.Module):
    """SE gate: GAP -> 1x1 reduce -> act -> 1x1 expand -> sigmoid -> scale."""

    def __init__(self, channels: int, reduced: int, act: type) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = act()
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class MixBlock(nn.Module):
    """Inverted residual with a MixConv depthwise stage (expansion 1 = depthwise separable)."""

    def __init__(self, in_ch, out_ch, kernel_sizes, expand, stride, exp_groups, proj_groups, se_ratio, swish):
        super().__init__()
        act = nn.SiLU if swish else nn.ReLU
        mid = in_ch * expand
        self.use_residual = stride == 1 and in_ch == out_ch
        layers = []
        if expand != 1:
            layers += [_pointwise(in_ch, mid, exp_groups), nn.BatchNorm2d(mid), act()]
        layers += [MixConv2d(mid, tuple(kernel_sizes), stride=stride, bias=False), nn.BatchNorm2d(mid), act()]
        if se_ratio > 0:
            layers.append(SqueezeExcite(mid, max(1, int(in_ch * se_ratio)), act))
        layers += [_pointwise(mid, out_ch, proj_groups), nn.BatchNorm2d(out_ch)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.use_residual else y


class MixNet(nn.Module):
    """MixNet classifier built from a block table (global average pooling: any input size)."""

    def __init__(self, blocks=_MIXNET_S, num_classes: int = 1000, width_mult: float = 1.0,
                 stem: int = 16, head: int = 1536, dropout: float = 0.2) -> None:
        super().__init__()
        in_ch = make_divisible(stem * width_mult)
        layers = [conv_bn_act(3, in_ch, 3, 2)]
        for ks, e, c, n, s, ag, pg, se, sw in blocks:
            out_ch = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(MixBlock(in_ch, out_ch, ks, e, s if i == 0 else 1, ag, pg, se, sw))
                in_ch = out_ch
        head_ch = make_divisible(head * max(1.0, width_mult))
        layers.append(conv_bn_act(in_ch, head_ch, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head_ch, num_classes))

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_model("mixnet_s", default_input=(1, 3, 224, 224), kinds=("mixconv", "group"))
def mixnet_s(num_classes: int = 1000, width_mult: float = 1.0) -> nn.Module:
    """MixNet-S: MixConv depthwise stages (kernels 3..11), grouped 1x1 convs, SE."""
    return MixNet(_MIXNET_S, num_classes=num_classes, width_mult=width_mult)
