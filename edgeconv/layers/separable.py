"""Depthwise separable convolution (Chollet, "Xception", CVPR 2017; Howard et al., "MobileNets",
arXiv:1704.04861).

A depthwise ``K x K`` conv (``C -> C``) followed by a pointwise ``1 x 1`` conv (``C -> N``):
``C*K*K + C*N`` parameters instead of ``N*C*K*K`` (``docs/conv-kinds.md`` section 3).
"""

from __future__ import annotations

import math
from typing import Dict

import torch
from torch import nn

from ..kinds import layer_kind
from .._validate import (
    IntPair,
    check_input,
    check_pair_positive,
    check_positive,
    resolve_padding,
)

__all__ = ["DepthwiseSeparableConv2d"]


@layer_kind
class DepthwiseSeparableConv2d(nn.Module):
    """Depthwise ``K x K`` ("same" padding, optional stride/dilation) then pointwise ``1 x 1``.

    Shapes:
        * input  ``[N, in_ch, H, W]``
        * ``depthwise.weight`` ``[in_ch, 1, k, k]`` (no bias: a depthwise bias would be absorbed
          by the pointwise bias, ``pw(dw(x) + b) = pw(dw(x)) + W_pw b``)
        * ``pointwise.weight`` ``[out_ch, in_ch, 1, 1]``; ``pointwise.bias`` ``[out_ch]``
        * output ``[N, out_ch, ceil(H / stride), ceil(W / stride)]``

    Parameters (without bias): ``in_ch*k*k + in_ch*out_ch``. Odd kernel sizes only.
    """

    kind = "separable"

    def macs(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, int]:
        b, c, spatial = x.shape[0], x.shape[1], math.prod(y.shape[2:])
        kk = math.prod(self.depthwise.kernel_size)
        return {"depthwise": b * spatial * c * kk, "pointwise": b * spatial * c * self.out_ch}

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: IntPair = 3,
        stride: IntPair = 1,
        dilation: IntPair = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        check_positive("in_ch", in_ch)
        check_positive("out_ch", out_ch)
        k = check_pair_positive("kernel_size", kernel_size)
        s = check_pair_positive("stride", stride)
        d = check_pair_positive("dilation", dilation)
        p = resolve_padding(None, k, d)
        self.in_ch, self.out_ch = in_ch, out_ch
        self.depthwise = nn.Conv2d(in_ch, in_ch, k, stride=s, padding=p, dilation=d, groups=in_ch, bias=False)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_ch, type(self).__name__)
        return self.pointwise(self.depthwise(x))
