"""Group convolution (Krizhevsky et al., NeurIPS 2012 "AlexNet"; Xie et al., CVPR 2017 "ResNeXt").

The ``C`` input channels are split into ``G`` groups; each group of ``N / G`` filters sees only
its ``C / G`` channels, so the weight is ``N x C/G x K x K`` -- ``1/G`` of a standard conv
(``docs/conv-kinds.md`` section 3).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..kinds import conv2d_macs, layer_kind
from .._validate import (
    IntPair,
    check_divisible,
    check_input,
    check_pair_positive,
    check_positive,
    resolve_padding,
)

__all__ = ["GroupConv2d"]


@layer_kind
class GroupConv2d(nn.Conv2d):
    """Grouped 2-D convolution (an ``nn.Conv2d`` with ``groups=G``, validated arguments).

    Shapes:
        * input  ``[N, in_ch, H, W]``
        * weight ``[out_ch, in_ch / groups, kh, kw]``; bias ``[out_ch]`` (if ``bias``)
        * output ``[N, out_ch, H_out, W_out]`` (``H_out = H / stride`` rounded up for "same").

    ``padding=None`` means "same" padding ``k // 2`` (odd kernels only, ``ValueError`` for even).
    Exports to ONNX as one ``Conv`` node with the ``group`` attribute.
    """

    kind = "group"
    macs = conv2d_macs

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: IntPair,
        groups: int,
        stride: IntPair = 1,
        padding: Optional[IntPair] = None,
        bias: bool = True,
    ) -> None:
        check_positive("in_ch", in_ch)
        check_positive("out_ch", out_ch)
        check_positive("groups", groups)
        check_divisible("in_ch", in_ch, "groups", groups)
        check_divisible("out_ch", out_ch, "groups", groups)
        k = check_pair_positive("kernel_size", kernel_size)
        s = check_pair_positive("stride", stride)
        p = resolve_padding(padding, k, (1, 1))
        super().__init__(in_ch, out_ch, k, stride=s, padding=p, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels, type(self).__name__)
        return self._conv_forward(x, self.weight, self.bias)
