"""Spatially separable convolution: a ``K x 1`` conv followed by a ``1 x K`` conv.

For one channel, ``K + K`` instead of ``K * K`` multiplies per output (6 vs 9 for ``K = 3``);
only rank-1 kernels are exactly separable, a trained kernel is approximated by SVD
(``docs/conv-kinds.md`` section 4). For multi-channel layers this is the low-rank scheme 2 of
Jaderberg, Vedaldi & Zisserman, "Speeding up Convolutional Neural Networks with Low Rank
Expansions", BMVC 2014 (arXiv:1405.3866), also used by Inception-v3 (Szegedy et al., CVPR 2016)
as ``n x 1`` / ``1 x n`` factorisation.

Middle channels. The vertical conv maps ``C -> M`` and the horizontal conv ``M -> N``; the
default ``M = min(C, N)`` keeps the parameter ratio ``M*K*(C + N) / (N*C*K*K) <= 2/K`` (exactly
``6/9`` for ``C = N``, ``K = 3``: the single-channel "6 vs 9" generalised). A dense kernel
``W [N, C, K, K]`` is exactly representable iff the matrix ``A[(c, i), (n, j)] = W[n, c, i, j]``
(shape ``[C*K, N*K]``) has rank ``<= M``; :meth:`SpatiallySeparableConv2d.from_conv2d` builds the
best rank-``M`` layer (Eckart-Young) with :func:`edgeconv.analysis.separable_approximation`.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Union

import torch
from torch import nn

from ..kinds import layer_kind
from .._validate import IntPair, check_input, check_odd_kernel, check_pair_positive, check_positive

__all__ = ["SpatiallySeparableConv2d"]


@layer_kind
class SpatiallySeparableConv2d(nn.Module):
    """``K x 1`` conv (``in_ch -> mid_ch``) then ``1 x K`` conv (``mid_ch -> out_ch``), "same" padding.

    Shapes:
        * input ``[N_b, in_ch, H, W]``
        * ``vertical.weight`` ``[mid_ch, in_ch, k, 1]`` (padding ``(k//2, 0)``, stride ``(s, 1)``,
          no bias: it would mix with the zero padding of the next conv)
        * ``horizontal.weight`` ``[out_ch, mid_ch, 1, k]`` (padding ``(0, k//2)``, stride
          ``(1, s)``); ``horizontal.bias`` ``[out_ch]`` (if ``bias``)
        * output ``[N_b, out_ch, ceil(H / s), ceil(W / s)]``

    ``mid_ch`` defaults to ``min(in_ch, out_ch)``. Parameters (without bias):
    ``k * mid_ch * (in_ch + out_ch)``. The composition equals a dense conv with
    ``W[n, c, i, j] = sum_m V[m, c, i] * H[n, m, j]`` (see :meth:`composed_weight`).
    """

    kind = "spatially_separable"

    def macs(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, int]:
        b, c, w = x.shape[0], x.shape[1], x.shape[-1]
        k, oh = self.kernel_size, y.shape[2]
        return {
            "vertical": b * self.mid_ch * oh * w * c * k,  # [B, M, oh, W] x (C * k)
            "horizontal": math.prod(y.shape) * self.mid_ch * k,
        }

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: IntPair = 1,
        bias: bool = True,
        mid_ch: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.in_ch = check_positive("in_ch", in_ch)
        self.out_ch = check_positive("out_ch", out_ch)
        self.mid_ch = check_positive("mid_ch", min(in_ch, out_ch) if mid_ch is None else mid_ch)
        k = check_positive("kernel_size", kernel_size)
        check_odd_kernel("kernel_size", (k, k))
        s = check_pair_positive("stride", stride)
        self.kernel_size, self.stride = k, s
        self.vertical = nn.Conv2d(in_ch, self.mid_ch, (k, 1), stride=(s[0], 1), padding=(k // 2, 0), bias=False)
        self.horizontal = nn.Conv2d(self.mid_ch, out_ch, (1, k), stride=(1, s[1]), padding=(0, k // 2), bias=bias)

    def composed_weight(self) -> torch.Tensor:
        """Dense equivalent ``[out_ch, in_ch, k, k]``: ``W[n, c, i, j] = sum_m V[m, c, i] H[n, m, j]``."""
        v = self.vertical.weight[:, :, :, 0]  # [M, C, K]
        h = self.horizontal.weight[:, :, 0, :]  # [N, M, K]
        return torch.einsum("mci,nmj->ncij", v, h)

    @classmethod
    def from_conv2d(
        cls,
        conv: Union[nn.Conv2d, torch.Tensor],
        bias: Optional[torch.Tensor] = None,
        rank: Optional[int] = None,
        stride: IntPair = 1,
    ) -> "SpatiallySeparableConv2d":
        """Best rank-``rank`` spatially separable layer for a trained ``K x K`` conv.

        Args:
            conv: an ``nn.Conv2d`` (``groups=1``, ``dilation=1``, square odd kernel, padding
                ``k//2``; its stride and bias are copied) or a weight ``[N, C, K, K]`` /
                ``[K, K]`` (single channel).
            bias: ``[N]`` bias when ``conv`` is a tensor.
            rank: middle channels ``M`` (default ``min(C, N)``), at most ``min(C*K, N*K)``.
            stride: used when ``conv`` is a tensor.
        Returns:
            the layer, with ``approximation_error`` (relative Frobenius error of the composed
            weight, from the SVD) set as an attribute.
        """
        from ..analysis import separable_approximation

        if isinstance(conv, nn.Conv2d):
            k = conv.kernel_size
            if conv.groups != 1 or conv.dilation != (1, 1) or k[0] != k[1] or k[0] % 2 == 0:
                raise ValueError(
                    "conv must have groups=1, dilation=1 and a square odd kernel, got "
                    f"groups={conv.groups}, dilation={conv.dilation}, kernel_size={k}"
                )
            if conv.padding != "same" and tuple(conv.padding) != (k[0] // 2, k[1] // 2):
                raise ValueError(f'conv must use "same" padding {(k[0] // 2,) * 2}, got {conv.padding}')
            if conv.padding_mode != "zeros":
                raise ValueError(f"conv must use padding_mode='zeros', got {conv.padding_mode!r}")
            weight, bias, stride = conv.weight.detach(), (None if conv.bias is None else conv.bias.detach()), conv.stride
        else:
            weight = conv.detach()
            if weight.dim() == 2:
                weight = weight[None, None]
        if weight.dim() != 4 or weight.shape[-1] != weight.shape[-2]:
            raise ValueError(f"weight must be [N, C, K, K] or [K, K], got shape {tuple(weight.shape)}")
        n, c, k, _ = weight.shape
        max_rank = min(c * k, n * k)
        rank = min(c, n) if rank is None else check_positive("rank", rank)
        if rank > max_rank:
            raise ValueError(f"rank must be <= min(C*K, N*K) = {max_rank}, got {rank}")
        layer = cls(c, n, k, stride=stride, bias=bias is not None, mid_ch=rank)
        a = weight.permute(1, 2, 0, 3).reshape(c * k, n * k)  # A[(c, i), (n, j)]
        vert, hor, err = separable_approximation(a, rank=rank)  # [C*K, M], [M, N*K]
        with torch.no_grad():
            layer.vertical.weight.copy_(vert.reshape(c, k, rank).permute(2, 0, 1).unsqueeze(-1))
            layer.horizontal.weight.copy_(hor.reshape(rank, n, k).permute(1, 0, 2).unsqueeze(2))
            if bias is not None:
                layer.horizontal.bias.copy_(bias)
        layer.approximation_error = float(err)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_ch, type(self).__name__)
        return self.horizontal(self.vertical(x))
