"""Dilated (atrous) convolution (Yu & Koltun, ICLR 2016 "Multi-Scale Context Aggregation by
Dilated Convolutions"; Chen et al., "DeepLab", TPAMI 2018).

``d - 1`` gaps are inserted between kernel taps: receptive field ``(K - 1) * d + 1`` with the
parameters of a ``K x K`` conv (``docs/conv-kinds.md`` section 4).
"""

from __future__ import annotations

import torch
from torch import nn

from ..kinds import conv2d_macs, layer_kind
from .._validate import IntPair, check_input, check_pair_positive, check_positive, resolve_padding

__all__ = ["DilatedConv2d"]


@layer_kind
class DilatedConv2d(nn.Conv2d):
    """Dilated 2-D convolution with "same" padding ``(k // 2) * dilation``.

    Shapes:
        * input  ``[N, in_ch, H, W]``
        * weight ``[out_ch, in_ch, k, k]``; bias ``[out_ch]`` (if ``bias``)
        * output ``[N, out_ch, ceil(H / stride), ceil(W / stride)]``

    Kernel sizes must be odd ("same" padding), ``ValueError`` otherwise. Exports as one ONNX
    ``Conv`` with the ``dilations`` attribute.
    """

    kind = "dilated"
    macs = conv2d_macs

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: IntPair = 3,
        dilation: IntPair = 2,
        stride: IntPair = 1,
        bias: bool = True,
    ) -> None:
        check_positive("in_ch", in_ch)
        check_positive("out_ch", out_ch)
        k = check_pair_positive("kernel_size", kernel_size)
        d = check_pair_positive("dilation", dilation)
        s = check_pair_positive("stride", stride)
        p = resolve_padding(None, k, d)
        super().__init__(in_ch, out_ch, k, stride=s, padding=p, dilation=d, bias=bias)

    @property
    def receptive_field(self) -> tuple:
        """``((kh - 1) * dh + 1, (kw - 1) * dw + 1)``."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel_size, self.dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, type(self).__name__)
        return self._conv_forward(x, self.weight, self.bias)
