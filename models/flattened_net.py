"""A small all-separable CNN: flattened convolutions (Jin et al., "Flattened Convolutional
Neural Networks for Feedforward Acceleration", ICLR 2015 workshop) and spatially separable
``K x 1`` / ``1 x K`` convolutions.

Three stages of two :class:`~edgeconv.layers.FlattenedConv2d` layers (lateral 1x1, vertical
Kx1, horizontal 1xK; the paper's CIFAR networks are stacks of these) followed by a stride-2
:class:`~edgeconv.layers.SpatiallySeparableConv2d` for downsampling, BN + ReLU after each.
"""

from __future__ import annotations

from torch import nn

from edgeconv.layers import FlattenedConv2d, SpatiallySeparableConv2d

from ._blocks import bn_act, conv_bn_act, make_divisible
from ._registry import register_model

__all__ = ["FlattenedNet", "flattened_net"]


class FlattenedNet(nn.Module):
    """stem conv -> 3 x [flattened, flattened, spatially separable /2] -> GAP -> FC."""

    def __init__(self, widths=(32, 64, 128, 256), num_classes: int = 1000, width_mult: float = 1.0,
                 kernel_size: int = 3) -> None:
        super().__init__()
        widths = [make_divisible(w * width_mult) for w in widths]
        layers = [conv_bn_act(3, widths[0], 3, 2)]
        in_ch = widths[0]
        for width in widths[1:]:
            layers += [
                bn_act(FlattenedConv2d(in_ch, in_ch, kernel_size), in_ch),
                bn_act(FlattenedConv2d(in_ch, width, kernel_size), width),
                bn_act(SpatiallySeparableConv2d(width, width, kernel_size, stride=2), width),
            ]
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


@register_model("flattened_net", default_input=(1, 3, 224, 224), kinds=("flattened", "spatially_separable"))
def flattened_net(num_classes: int = 1000, width_mult: float = 1.0, kernel_size: int = 3) -> nn.Module:
    """Flattened (1x1, Kx1, 1xK) convs + spatially separable (Kx1, 1xK) downsampling."""
    return FlattenedNet(num_classes=num_classes, width_mult=width_mult, kernel_size=kernel_size)
