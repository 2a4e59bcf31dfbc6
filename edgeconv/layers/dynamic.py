"""Dynamic convolution (Chen et al., "Dynamic Convolution: Attention over Convolution Kernels",
CVPR 2020, arXiv:1912.03458).

``K`` parallel kernels ``W_k, b_k`` are mixed per input sample by the attention
``pi(x) = softmax(FC(ReLU(FC(GAP(x)))) / tau)``: ``W~ = sum_k pi_k W_k``, ``b~ = sum_k pi_k b_k``,
``y = W~ * x + b~`` (``docs/conv-kinds.md`` section 5). The temperature ``tau`` is large early in
training (30 in the paper) and annealed to 1.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..kinds import conv_macs, layer_kind
from .. import functional as ecf
from .._validate import (
    IntPair,
    check_divisible,
    check_input,
    check_pair_positive,
    check_positive,
    resolve_padding,
)

__all__ = ["DynamicConv2d"]


@layer_kind
class DynamicConv2d(nn.Module):
    """Dynamic convolution with ``num_kernels`` kernels and an SE-style attention branch.

    Shapes:
        * input ``[N, in_ch, H, W]``
        * ``weight`` ``[num_kernels, out_ch, in_ch / groups, kh, kw]``
        * ``bias`` ``[num_kernels, out_ch]`` (if ``bias``)
        * attention: GAP ``[N, in_ch]`` -> ``fc1`` (``in_ch -> max(1, in_ch // reduction)``) ->
          ReLU -> ``fc2`` (``-> num_kernels``) -> ``/ temperature`` -> softmax: ``[N, num_kernels]``
        * output ``[N, out_ch, H_out, W_out]``

    ``padding=None`` means ``k // 2 * dilation`` ("same" at stride 1; odd kernels only).
    ``temperature`` is settable (must be > 0) for the annealing schedule.
    """

    kind = "dynamic"

    def macs(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, int]:
        b, c, h, w = x.shape
        return {
            "attention": b * (c * h * w + self.fc1.in_features * self.fc1.out_features
                              + self.fc2.in_features * self.fc2.out_features),
            "kernel_mixing": b * self.num_kernels * (self.weight[0].numel() + (self.out_ch if self.bias is not None else 0)),
            "conv": conv_macs(y.shape, c // self.groups, self.kernel_size),
        }

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: IntPair,
        num_kernels: int = 4,
        reduction: int = 4,
        temperature: float = 30.0,
        stride: IntPair = 1,
        padding: Optional[IntPair] = None,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_ch = check_positive("in_ch", in_ch)
        self.out_ch = check_positive("out_ch", out_ch)
        self.num_kernels = check_positive("num_kernels", num_kernels)
        check_positive("reduction", reduction)
        self.groups = check_positive("groups", groups)
        check_divisible("in_ch", in_ch, "groups", groups)
        check_divisible("out_ch", out_ch, "groups", groups)
        self.kernel_size = check_pair_positive("kernel_size", kernel_size)
        self.stride = check_pair_positive("stride", stride)
        self.dilation = check_pair_positive("dilation", dilation)
        self.padding = resolve_padding(padding, self.kernel_size, self.dilation)
        self.temperature = temperature
        hidden = max(1, in_ch // reduction)
        self.fc1 = nn.Linear(in_ch, hidden)
        self.fc2 = nn.Linear(hidden, num_kernels)
        self.weight = nn.Parameter(torch.empty(num_kernels, out_ch, in_ch // groups, *self.kernel_size))
        self.bias: Optional[nn.Parameter] = (
            nn.Parameter(torch.empty(num_kernels, out_ch)) if bias else None
        )
        self.reset_parameters()

    @property
    def temperature(self) -> float:
        """Softmax temperature ``tau`` (> 0)."""
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"temperature must be a finite number > 0, got {value!r}")
        self._temperature = float(value)

    def reset_parameters(self) -> None:
        """Each of the ``K`` kernels initialised independently like ``nn.Conv2d``."""
        fan_in = self.weight.shape[2] * self.kernel_size[0] * self.kernel_size[1]
        for k in range(self.num_kernels):
            nn.init.kaiming_uniform_(self.weight.data[k], a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """``pi(x) = softmax(fc2(relu(fc1(mean_{H,W} x))) / tau)``, shape ``[N, num_kernels]``."""
        logits = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3)))))
        return torch.softmax(logits / self._temperature, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_ch, type(self).__name__)
        return ecf.dynamic_conv2d(
            x, self.weight, self.attention(x), self.bias, stride=self.stride,
            padding=self.padding, dilation=self.dilation, groups=self.groups,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_ch}, {self.out_ch}, kernel_size={self.kernel_size}, "
            f"num_kernels={self.num_kernels}, temperature={self._temperature}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"bias={self.bias is not None}"
        )
