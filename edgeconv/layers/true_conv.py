"""True (kernel-flipped) 2-D convolution as a layer.

Deep-learning "convolution" (``nn.Conv2d``) is cross-correlation
``y[i, j] = sum_{u,v} F[u, v] * x[i + u, j + v]``. True convolution flips the kernel by 180
degrees first, ``y[i, j] = sum_{u,v} F[u, v] * x[i - u, j - v]``, i.e. it is the correlation with
``F[..., ::-1, ::-1]`` (see ``docs/conv-kinds.md`` section 1; any signal-processing text, e.g.
Oppenheim & Schafer, *Discrete-Time Signal Processing*).
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from ..kinds import conv_macs, layer_kind
from .. import functional as ecf
from ._init import init_conv_parameters_
from .._validate import IntPair, check_input, check_pair_positive, check_positive, resolve_padding

__all__ = ["TrueConv2d"]


@layer_kind
class TrueConv2d(nn.Module):
    """2-D true convolution (kernel flipped by 180 degrees before sliding).

    Shapes:
        * input  ``[N, in_ch, H, W]``
        * weight ``[out_ch, in_ch, kh, kw]`` (the kernel *as convolved*, i.e. unflipped)
        * bias   ``[out_ch]`` (if ``bias``)
        * output ``[N, out_ch, H_out, W_out]`` with the usual
          ``H_out = floor((H + 2 p - d (kh - 1) - 1) / s) + 1``; ``padding=None`` means
          "same" padding ``k // 2 * d`` (odd kernels only).

    ``forward`` is :func:`edgeconv.functional.convolve2d` (``F.conv2d`` with the weight flipped
    by ``torch.flip``). At ONNX export the flip acts on a parameter only, so a constant-folding
    exporter turns it into one standard ``Conv`` node with flipped constant weights.
    ``layer.weight.flip(-2, -1)`` is the equivalent ``nn.Conv2d`` weight.
    """

    kind = "true"

    def macs(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, int]:
        return {"conv": conv_macs(y.shape, x.shape[1], self.kernel_size)}

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: Optional[IntPair] = 0,
        dilation: IntPair = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_ch = check_positive("in_ch", in_ch)
        self.out_ch = check_positive("out_ch", out_ch)
        self.kernel_size = check_pair_positive("kernel_size", kernel_size)
        self.stride = check_pair_positive("stride", stride)
        self.dilation = check_pair_positive("dilation", dilation)
        self.padding = resolve_padding(padding, self.kernel_size, self.dilation)
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_ch)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Same initialisation as ``nn.Conv2d`` (Kaiming-uniform, a = sqrt(5))."""
        init_conv_parameters_(self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_ch, type(self).__name__)
        return ecf.convolve2d(
            x, self.weight, self.bias, stride=self.stride, padding=self.padding, dilation=self.dilation
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_ch}, {self.out_ch}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}"
        )
