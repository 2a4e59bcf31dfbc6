"""Depthwise and global depthwise convolutions.

* Depthwise: ``G = C`` groups, one ``K x K`` kernel per channel (``multiplier`` kernels per
  channel give ``N = m * C`` outputs); weight ``N x 1 x K x K``. Howard et al., "MobileNets",
  arXiv:1704.04861 (2017); Chollet, "Xception", CVPR 2017.
* Global depthwise (GDC): depthwise with ``K = H = W`` and no padding, output ``C x 1 x 1``:
  unlike global average pooling every spatial position has its own learnable weight.
  Chen et al., "MobileFaceNets", CCBR 2018 (arXiv:1804.07573).

See ``docs/conv-kinds.md`` section 3.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..kinds import conv2d_macs, layer_kind
from .._validate import (
    IntPair,
    check_input,
    check_pair_positive,
    check_positive,
    resolve_padding,
)

__all__ = ["DepthwiseConv2d", "GlobalDepthwiseConv2d"]


@layer_kind
class DepthwiseConv2d(nn.Conv2d):
    """Depthwise 2-D convolution (``groups = channels``) with an optional channel multiplier.

    Shapes:
        * input  ``[N, channels, H, W]``
        * weight ``[channels * multiplier, 1, kh, kw]``; bias ``[channels * multiplier]``
        * output ``[N, channels * multiplier, H_out, W_out]``; output channel
          ``c * multiplier + j`` is input channel ``c`` correlated with kernel ``j`` of ``c``.

    ``padding=None`` means "same" padding ``k // 2`` (odd kernels only).
    """

    kind = "depthwise"
    macs = conv2d_macs

    def __init__(
        self,
        channels: int,
        kernel_size: IntPair = 3,
        multiplier: int = 1,
        stride: IntPair = 1,
        padding: Optional[IntPair] = None,
        bias: bool = True,
    ) -> None:
        check_positive("channels", channels)
        check_positive("multiplier", multiplier)
        k = check_pair_positive("kernel_size", kernel_size)
        s = check_pair_positive("stride", stride)
        p = resolve_padding(padding, k, (1, 1))
        super().__init__(
            channels, channels * multiplier, k, stride=s, padding=p, groups=channels, bias=bias
        )
        self.multiplier = multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, type(self).__name__)
        return self._conv_forward(x, self.weight, self.bias)


@layer_kind
class GlobalDepthwiseConv2d(nn.Conv2d):
    """Global depthwise convolution (GDC, MobileFaceNets): a per-channel ``H x W`` kernel.

    Shapes:
        * input  ``[N, channels, H, W]`` with ``(H, W) == spatial_size`` (checked)
        * weight ``[channels, 1, H, W]``; bias ``[channels]`` (if ``bias``, default off as in
          MobileFaceNets where a BatchNorm follows)
        * output ``[N, channels, 1, 1]``: ``y[n, c] = sum_{i,j} w[c, i, j] * x[n, c, i, j]``
    """

    kind = "gdc"
    macs = conv2d_macs

    def __init__(self, channels: int, spatial_size: IntPair, bias: bool = False) -> None:
        check_positive("channels", channels)
        size = check_pair_positive("spatial_size", spatial_size)
        super().__init__(channels, channels, size, stride=1, padding=0, groups=channels, bias=bias)
        self.spatial_size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, type(self).__name__)
        if tuple(x.shape[-2:]) != self.spatial_size:
            raise ValueError(
                f"GlobalDepthwiseConv2d: input spatial size must equal spatial_size="
                f"{self.spatial_size}, got {tuple(x.shape[-2:])}"
            )
        return self._conv_forward(x, self.weight, self.bias)
