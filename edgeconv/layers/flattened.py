"""Flattened convolution (Jin, Dundar & Culurciello, "Flattened Convolutional Neural Networks
for Feedforward Acceleration", ICLR 2015 workshop, arXiv:1412.5474).

A 3-D ``C x K x K`` filter is replaced by three 1-D filters in sequence: lateral (``1 x 1``
across channels, ``C -> N``), vertical (``K x 1`` per channel) and horizontal (``1 x K`` per
channel) (``docs/conv-kinds.md`` section 4). The composition equals a dense conv whose filter
``n`` is the rank-1 tensor ``L[n, :] (x) V[n, :] (x) H[n, :]``.
"""

from __future__ import annotations

import math
from typing import Dict

import torch
from torch import nn

from ..kinds import layer_kind
from .._validate import check_input, check_odd_kernel, check_positive

__all__ = ["FlattenedConv2d"]


@layer_kind
class FlattenedConv2d(nn.Module):
    """Lateral ``1x1`` (``C -> N``) -> vertical ``Kx1`` depthwise -> horizontal ``1xK`` depthwise.

    Shapes:
        * input ``[N_b, in_ch, H, W]``
        * ``lateral.weight`` ``[out_ch, in_ch, 1, 1]``
        * ``vertical.weight`` ``[out_ch, 1, k, 1]`` (padding ``(k//2, 0)``)
        * ``horizontal.weight`` ``[out_ch, 1, 1, k]`` (padding ``(0, k//2)``);
          ``horizontal.bias`` ``[out_ch]`` (the only bias: intermediate biases would mix with
          the zero padding)
        * output ``[N_b, out_ch, H, W]`` ("same" size, odd ``k`` only)

    Parameters (without bias): ``out_ch * (in_ch + 2 k)``. :meth:`composed_weight` gives the
    equivalent dense ``[out_ch, in_ch, k, k]`` weight.
    """

    kind = "flattened"

    def macs(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, int]:
        b, c, h, w = x.shape
        k, n = self.kernel_size, self.out_ch
        return {
            "lateral": b * n * h * w * c,
            "vertical": b * n * h * w * k,
            "horizontal": math.prod(y.shape) * k,
        }

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__()
        self.in_ch = check_positive("in_ch", in_ch)
        self.out_ch = check_positive("out_ch", out_ch)
        k = check_positive("kernel_size", kernel_size)
        check_odd_kernel("kernel_size", (k, k))
        self.kernel_size = k
        self.lateral = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.vertical = nn.Conv2d(out_ch, out_ch, (k, 1), padding=(k // 2, 0), groups=out_ch, bias=False)
        self.horizontal = nn.Conv2d(out_ch, out_ch, (1, k), padding=(0, k // 2), groups=out_ch, bias=bias)

    def composed_weight(self) -> torch.Tensor:
        """Dense equivalent ``W[n, c, i, j] = L[n, c] * V[n, i] * H[n, j]``, ``[out_ch, in_ch, k, k]``."""
        lat = self.lateral.weight[:, :, 0, 0]
        ver = self.vertical.weight[:, 0, :, 0]
        hor = self.horizontal.weight[:, 0, 0, :]
        return lat[:, :, None, None] * ver[:, None, :, None] * hor[:, None, None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_ch, type(self).__name__)
        return self.horizontal(self.vertical(self.lateral(x)))
