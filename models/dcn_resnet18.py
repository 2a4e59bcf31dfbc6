"""ResNet-18 with modulated deformable convolutions (DCNv2) in stages 3 and 4.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; Zhu et al., "Deformable
ConvNets v2", CVPR 2019 (deformable layers in conv3-conv5). Here, in every BasicBlock of
``layer3`` and ``layer4`` the second (stride-1) 3x3 conv is a
:class:`~edgeconv.layers.ModulatedDeformConv2d` -- as mmdetection's DCN ResNets replace the
stride-1 3x3 conv of a block; the strided first conv stays a standard conv.
"""

from __future__ import annotations

from torch import nn

from edgeconv.layers import ModulatedDeformConv2d

from ._blocks import make_divisible
from ._registry import register_model

__all__ = ["BasicBlock", "DCNResNet", "dcn_resnet18"]


class BasicBlock(nn.Module):
    """3x3 -> BN/ReLU -> 3x3 (standard or DCNv2) -> BN, plus shortcut, ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, deform: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        if deform:
            self.conv2 = ModulatedDeformConv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        else:
            self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + identity)


class DCNResNet(nn.Module):
    """ResNet with BasicBlocks; ``deform_stages`` (1-based, 1..4) get DCNv2 in their blocks."""

    def __init__(self, layers=(2, 2, 2, 2), deform_stages=(3, 4), num_classes: int = 1000,
                 width_mult: float = 1.0) -> None:
        super().__init__()
        widths = [make_divisible(w * width_mult) for w in (64, 128, 256, 512)]
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        in_ch = widths[0]
        for idx, (width, n) in enumerate(zip(widths, layers), start=1):
            blocks = []
            for i in range(n):
                stride = 2 if (i == 0 and idx > 1) else 1
                blocks.append(BasicBlock(in_ch, width, stride, deform=idx in deform_stages))
                in_ch = width
            setattr(self, f"layer{idx}", nn.Sequential(*blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.pool(x).flatten(1))


@register_model("dcn_resnet18", default_input=(1, 3, 224, 224), kinds=("deform_v2",))
def dcn_resnet18(num_classes: int = 1000, width_mult: float = 1.0) -> nn.Module:
    """ResNet-18 with ModulatedDeformConv2d (DCNv2) in stages 3-4."""
    return DCNResNet((2, 2, 2, 2), (3, 4), num_classes=num_classes, width_mult=width_mult)
