"""Deformable convolutions.

* v1: Dai et al., "Deformable Convolutional Networks", ICCV 2017 (arXiv:1703.06211).
  ``y(p) = sum_k w_k * x(p + p_k + dp_k)``, bilinear sampling, zeros outside the image.
* v2: Zhu et al., "Deformable ConvNets v2: More Deformable, Better Results", CVPR 2019
  (arXiv:1811.11168). ``y(p) = sum_k w_k * x(p + p_k + dp_k) * m_k``, ``m_k = sigmoid(.)``.

The offsets (``2*kh*kw`` channels per offset group, ``(dy, dx)`` per tap as in torchvision and
ONNX ``DeformConv``) and the v2 modulation logits (``kh*kw`` per offset group) come from regular
convs over the same input with the layer's kernel/stride/padding/dilation, initialised to zero
(as in both papers), so a fresh v1 layer equals a plain conv with the same weight and a fresh v2
layer equals ``0.5 * conv(x, weight) + bias``. See ``docs/conv-kinds.md`` section 4.
The sampling itself runs in :func:`edgeconv.functional.deform_conv2d` (one custom-op node under
``torch.export``).
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from ..kinds import conv_macs, layer_kind
from .. import functional as ecf
from ._init import init_conv_parameters_
from .._validate import (
    IntPair,
    check_divisible,
    check_input,
    check_pair_non_negative,
    check_pair_positive,
    check_positive,
)

__all__ = ["DeformConv2d", "ModulatedDeformConv2d"]


class _DeformConvBase(nn.Module):
    modulated: bool = False

    def macs(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, int]:
        b, c, spatial = x.shape[0], x.shape[1], math.prod(y.shape[2:])
        kk = math.prod(self.kernel_size)
        sampled = b * c * kk * spatial
        parts = {
            "conv": conv_macs(y.shape, c // self.groups, self.kernel_size),
            "offset_conv": b * self.conv_offset.out_channels * spatial * c * kk,
            "sampling": 4 * sampled,
        }
        if self.conv_mask is not None:
            parts["mask_conv"] = b * self.conv_mask.out_channels * spatial * c * kk
            parts["modulation"] = sampled
        return parts

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: IntPair = 3,
        stride: IntPair = 1,
        padding: IntPair = 1,
        dilation: IntPair = 1,
        groups: int = 1,
        offset_groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_ch = check_positive("in_ch", in_ch)
        self.out_ch = check_positive("out_ch", out_ch)
        self.groups = check_positive("groups", groups)
        self.offset_groups = check_positive("offset_groups", offset_groups)
        check_divisible("in_ch", in_ch, "groups", groups)
        check_divisible("out_ch", out_ch, "groups", groups)
        check_divisible("in_ch", in_ch, "offset_groups", offset_groups)
        self.kernel_size = check_pair_positive("kernel_size", kernel_size)
        self.stride = check_pair_positive("stride", stride)
        self.padding = check_pair_non_negative("padding", padding)
        self.dilation = check_pair_positive("dilation", dilation)
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch // groups, kh, kw))
        self.bias: Optional[nn.Parameter] = nn.Parameter(torch.empty(out_ch)) if bias else None
        conv_kw = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, bias=True)
        self.conv_offset = nn.Conv2d(in_ch, offset_groups * 2 * kh * kw, self.kernel_size, **conv_kw)
        self.conv_mask = (
            nn.Conv2d(in_ch, offset_groups * kh * kw, self.kernel_size, **conv_kw)
            if self.modulated
            else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weight/bias as ``nn.Conv2d`` (Kaiming-uniform); offset and mask convs zero."""
        init_conv_parameters_(self.weight, self.bias)
        for conv in (self.conv_offset, self.conv_mask):
            if conv is not None:
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    def offsets_and_mask(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``offset [N, og*2*kh*kw, oh, ow]`` and (v2) ``mask [N, og*kh*kw, oh, ow]`` in [0, 1]."""
        offset = self.conv_offset(x)
        mask = torch.sigmoid(self.conv_mask(x)) if self.conv_mask is not None else None
        return offset, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_ch, type(self).__name__)
        offset, mask = self.offsets_and_mask(x)
        return ecf.deform_conv2d(
            x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding,
            dilation=self.dilation, mask=mask,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_ch}, {self.out_ch}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"offset_groups={self.offset_groups}, bias={self.bias is not None}"
        )


@layer_kind
class DeformConv2d(_DeformConvBase):
    """Deformable convolution v1 (Dai et al., ICCV 2017) with its own offset conv.

    Shapes:
        * input  ``[N, in_ch, H, W]``
        * ``weight`` ``[out_ch, in_ch / groups, kh, kw]``; ``bias`` ``[out_ch]`` (as torchvision)
        * ``conv_offset``: ``in_ch -> offset_groups * 2 * kh * kw`` (zero-initialised)
        * offsets ``[N, offset_groups * 2 * kh * kw, H_out, W_out]``, ``(dy, dx)`` per tap
        * output ``[N, out_ch, H_out, W_out]``, ``H_out = floor((H + 2p - d(kh-1) - 1)/s) + 1``
    """

    kind = "deform"

    modulated = False


@layer_kind
class ModulatedDeformConv2d(_DeformConvBase):
    """Modulated deformable convolution v2 (Zhu et al., CVPR 2019), own offset and mask convs.

    Shapes as :class:`DeformConv2d` plus ``conv_mask``: ``in_ch -> offset_groups * kh * kw``
    (zero-initialised) giving ``mask = sigmoid(conv_mask(x))`` of shape
    ``[N, offset_groups * kh * kw, H_out, W_out]``; ``0.5`` everywhere for a fresh layer.
    """

    kind = "deform_v2"

    modulated = True
