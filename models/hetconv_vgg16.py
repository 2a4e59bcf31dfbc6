"""VGG-16 with HetConv (P = 4) layers (Singh et al., "HetConv", CVPR 2019).

As in the paper's VGG-16 experiments, every 3x3 conv except the first (3 input channels cannot
be split into P = 4 parts) is a :class:`~edgeconv.layers.HetConv2d` with ``p=4``, each followed
by BatchNorm and ReLU. The classifier is the CIFAR-style one the paper uses (global pooling +
one linear layer), which also makes the network accept any input size >= 32x32.
"""

from __future__ import annotations

from torch import nn

from edgeconv.layers import HetConv2d

from ._blocks import make_divisible
from ._registry import register_model

__all__ = ["HetConvVGG", "hetconv_vgg16"]

_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class HetConvVGG(nn.Module):
    """VGG with HetConv(P) 3x3 layers after the first conv."""

    def __init__(self, cfg=_VGG16, p: int = 4, num_classes: int = 1000, width_mult: float = 1.0) -> None:
        super().__init__()
        layers = []
        in_ch = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            out_ch = make_divisible(v * width_mult, 2 * p)
            if in_ch % p == 0:
                conv = HetConv2d(in_ch, out_ch, 3, p=p, bias=False)
            else:
                conv = nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False)
            layers += [conv, nn.BatchNorm2d(out_ch), nn.ReLU()]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_ch, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_model("hetconv_vgg16", default_input=(1, 3, 224, 224), kinds=("hetconv",))
def hetconv_vgg16(num_classes: int = 1000, width_mult: float = 1.0, p: int = 4) -> nn.Module:
    """VGG-16 with HetConv2d (P=4) in place of every 3x3 conv but the first."""
    return HetConvVGG(_VGG16, p=p, num_classes=num_classes, width_mult=width_mult)
