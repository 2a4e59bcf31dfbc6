"""ShuffleNet v1 with ``g = 3`` groups (Zhang et al., "ShuffleNet: An Extremely Efficient
Convolutional Neural Network for Mobile Devices", CVPR 2018, Table 1).

Unit: grouped 1x1 + channel shuffle (:class:`~edgeconv.layers.ShuffledGroupConv2d`) -> BN/ReLU
-> depthwise 3x3 (stride 1 or 2) -> BN -> grouped 1x1 (:class:`~edgeconv.layers.GroupConv2d`) ->
BN; identity shortcut (add) at stride 1, 3x3 average pool shortcut (concat) at stride 2. The first
1x1 of stage 2 is not grouped (only 24 input channels), as in the paper. BN and ReLU are
per-channel, so applying them after the shuffle instead of before is the same architecture.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeconv.layers import DepthwiseConv2d, GroupConv2d, ShuffledGroupConv2d

from ._blocks import conv_bn_act
from ._registry import register_model

__all__ = ["ShuffleUnit", "ShuffleNetV1", "shufflenet_g3"]

_STAGE_CHANNELS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088), 8: (384, 768, 1536)}
_STAGE_REPEATS = (4, 8, 4)


class ShuffleUnit(nn.Module):
    """One ShuffleNet unit (stride 1: add; stride 2: concat with an average-pooled shortcut)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, groups: int, first_groups: int) -> None:
        super().__init__()
        self.stride = stride
        branch_out = out_ch - in_ch if stride == 2 else out_ch
        mid = out_ch // 4
        self.branch = nn.Sequential(
            ShuffledGroupConv2d(in_ch, mid, 1, first_groups, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(),
            DepthwiseConv2d(mid, 3, stride=stride, bias=False),
            nn.BatchNorm2d(mid),
            GroupConv2d(mid, branch_out, 1, groups, bias=False),
            nn.BatchNorm2d(branch_out),
        )
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x):
        y = self.branch(x)
        if self.stride == 2:
            return self.act(torch.cat([self.shortcut(x), y], dim=1))
        return self.act(x + y)


class ShuffleNetV1(nn.Module):
    """ShuffleNet v1 classifier; ``width_mult`` scales the stage widths (kept multiples of 4*g)."""

    def __init__(self, groups: int = 3, num_classes: int = 1000, width_mult: float = 1.0) -> None:
        super().__init__()
        if groups not in _STAGE_CHANNELS:
            raise ValueError(f"groups must be one of {sorted(_STAGE_CHANNELS)}, got {groups}")
        unit = 4 * groups
        stem = 24
        widths = [max(unit, int(round(c * width_mult / unit)) * unit) for c in _STAGE_CHANNELS[groups]]
        self.stem = nn.Sequential(conv_bn_act(3, stem, 3, 2), nn.MaxPool2d(3, 2, 1))
        blocks = []
        in_ch = stem
        for stage, (width, repeats) in enumerate(zip(widths, _STAGE_REPEATS)):
            for i in range(repeats):
                stride = 2 if i == 0 else 1
                first_groups = 1 if (stage == 0 and i == 0) else groups
                if stride == 2 and (width - in_ch) % groups:
                    raise ValueError(f"stage width {width} - input {in_ch} not divisible by groups {groups}")
                blocks.append(ShuffleUnit(in_ch, width, stride, groups, first_groups))
                in_ch = width
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


@register_model("shufflenet_g3", default_input=(1, 3, 224, 224), kinds=("shuffled_group", "group", "depthwise"))
def shufflenet_g3(num_classes: int = 1000, width_mult: float = 1.0) -> nn.Module:
    """ShuffleNet v1 (g=3): grouped 1x1 convs with channel shuffle, depthwise 3x3."""
    return ShuffleNetV1(groups=3, num_classes=num_classes, width_mult=width_mult)
