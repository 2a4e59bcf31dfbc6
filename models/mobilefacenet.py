"""MobileFaceNet (Chen et al., "MobileFaceNets: Efficient CNNs for Accurate Real-Time Face
Verification on Mobile Devices", CCBR 2018, arXiv:1804.07573, Table 1).

Stem 3x3/2 conv, 3x3 depthwise, five bottleneck stages (MobileNetV2 inverted residuals with
PReLU), a 1x1 conv to 512 channels, then the *global depthwise convolution* head
(:class:`~edgeconv.layers.GlobalDepthwiseConv2d`, a learnable weight per spatial position
instead of global average pooling) and a linear 1x1 conv to the 128-d embedding.

The GDC kernel must equal the final feature map, so the network is built for one input size:
``input_size`` (int or ``(H, W)``, default 112 -> a 7x7 GDC) is turned into the kernel size by
following the four stride-2 stages.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

from torch import nn

from edgeconv.layers import DepthwiseConv2d, GlobalDepthwiseConv2d

from ._blocks import conv_out, make_divisible, spatial_pair
from ._registry import register_model

__all__ = ["MobileFaceNet", "mobilefacenet", "gdc_spatial_size"]

# t, c, n, s (paper's Table 1)
_BOTTLENECKS = [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)]


def gdc_spatial_size(input_size: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
    """Feature-map size at the GDC head for an input of ``input_size`` (112 -> (7, 7))."""
    h, w = spatial_pair(input_size)
    # stem (s2) + the four stride-2 bottleneck stages; each 3x3 pad 1 conv: ceil(x / 2)
    n_down = 1 + sum(1 for _, _, _, s in _BOTTLENECKS if s == 2)
    for _ in range(n_down):
        h, w = conv_out(h, 3, 2, 1), conv_out(w, 3, 2, 1)
    return h, w


def _conv_bn_prelu(in_ch: int, out_ch: int, k: int, s: int, depthwise: bool = False, act: bool = True):
    conv = DepthwiseConv2d(in_ch, k, stride=s, bias=False) if depthwise else nn.Conv2d(in_ch, out_ch, k, s, k // 2, bias=False)
    layers = [conv, nn.BatchNorm2d(out_ch)]
    if act:
        layers.append(nn.PReLU(out_ch))
    return nn.Sequential(*layers)


class FaceBottleneck(nn.Module):
    """Inverted residual (1x1 expand, 3x3 depthwise, linear 1x1 project) with PReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.use_residual = stride == 1 and in_ch == out_ch
        self.conv = nn.Sequential(
            _conv_bn_prelu(in_ch, mid, 1, 1),
            _conv_bn_prelu(mid, mid, 3, stride, depthwise=True),
            _conv_bn_prelu(mid, out_ch, 1, 1, act=False),
        )

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.use_residual else y


class MobileFaceNet(nn.Module):
    """Face embedding network; output ``[N, embedding_size]`` (or logits if ``num_classes``)."""

    def __init__(self, input_size=112, embedding_size: int = 128, width_mult: float = 1.0,
                 num_classes: Optional[int] = None) -> None:
        super().__init__()
        self.input_size = spatial_pair(input_size)
        self.gdc_size = gdc_spatial_size(self.input_size)
        c64 = make_divisible(64 * width_mult)
        self.stem = nn.Sequential(_conv_bn_prelu(3, c64, 3, 2), _conv_bn_prelu(c64, c64, 3, 1, depthwise=True))
        blocks, in_ch = [], c64
        for t, c, n, s in _BOTTLENECKS:
            out_ch = make_divisible(c * width_mult)
            for i in range(n):
                blocks.append(FaceBottleneck(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        head_ch = make_divisible(512 * width_mult)
        self.conv_head = _conv_bn_prelu(in_ch, head_ch, 1, 1)
        self.gdc = nn.Sequential(GlobalDepthwiseConv2d(head_ch, self.gdc_size, bias=False), nn.BatchNorm2d(head_ch))
        self.embedding = nn.Sequential(nn.Conv2d(head_ch, embedding_size, 1, bias=False), nn.BatchNorm2d(embedding_size))
        self.classifier = nn.Linear(embedding_size, num_classes) if num_classes else None

    def forward(self, x):
        x = self.conv_head(self.blocks(self.stem(x)))
        x = self.embedding(self.gdc(x)).flatten(1)
        return self.classifier(x) if self.classifier is not None else x


@register_model("mobilefacenet", default_input=(1, 3, 112, 112), kinds=("gdc", "depthwise"))
def mobilefacenet(input_size=112, embedding_size: int = 128, width_mult: float = 1.0,
                  num_classes: Optional[int] = None) -> nn.Module:
    """MobileFaceNet: inverted residuals + GlobalDepthwiseConv2d (GDC) embedding head."""
    return MobileFaceNet(input_size, embedding_size, width_mult, num_classes)
