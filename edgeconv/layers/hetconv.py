"""HetConv: heterogeneous kernel-based convolution (Singh, Verma, Rai & Namboodiri, "HetConv:
Heterogeneous Kernel-Based Convolutions for Deep CNNs", CVPR 2019, arXiv:1903.04120).

Of the ``C`` kernels of each filter, ``C/P`` are ``K x K`` and the other ``C - C/P`` are
``1 x 1``; the position of the ``K x K`` kernels shifts from filter to filter. Parameters
``N*(C/P)*K*K + N*(C - C/P)`` (``docs/conv-kinds.md`` section 5).

Efficient form used here (no dense masked ``K x K`` conv at inference)::

    y = conv_kxk(x)                       # group conv, groups=P: N*(C/P)*K*K weights
      + conv1x1(x, weight_1x1 * mask_1x1) # one dense 1x1 conv whose weight is zero where the
                                          # filter already has its K x K kernels

Channel layouts (``layout=``):

* ``"paper"`` (exact Fig. 3 arrangement): filter ``n`` has its ``K x K`` kernels on the input
  channels ``c`` with ``c = n (mod P)``, i.e. every ``P``-th channel starting at position
  ``n mod P``; the start shifts by one from each filter to the next. The group conv then needs its
  input channels grouped by residue and its outputs interleaved back: two channel shuffles
  (``x -> shuffle(x, C/P)`` before, ``shuffle(., P)`` after ``conv_kxk``), each a
  Reshape/Transpose/Reshape at export (a memory copy, no MACs).
* ``"block"`` (default, fastest): filter ``n`` has its ``K x K`` kernels on the contiguous block
  ``[g*C/P, (g+1)*C/P)`` with ``g = n // (N/P)``: a plain group conv, no shuffles. It is the
  ``"paper"`` layer up to fixed permutations of the input and output channels, which the
  neighbouring layers absorb (same parameters, same FLOPs, same expressiveness in a network).

The dense 1x1 executes ``C*N`` MACs per output position instead of the paper's ``(C - C/P)*N``
(a ``1/P`` overhead on the 1x1 part only), in exchange for one standard ``Conv`` node (the
``weight * mask`` product is constant-folded at ONNX export); the masked entries stay exactly
zero (their gradient is zero) and :meth:`HetConv2d.num_parameters` counts only the true
parameters. A stored-compact alternative (only ``C - C/P`` values per filter) would need a
scatter in ``forward``; the equivalent ``conv1x1(x) - groupconv1x1(x)`` form would cost more.
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
    check_odd_kernel,
    check_pair_positive,
    check_positive,
)

__all__ = ["HetConv2d"]

_LAYOUTS = ("block", "paper")


@layer_kind
class HetConv2d(nn.Module):
    """HetConv layer with part ``p`` (``1/p`` of each filter's kernels are ``K x K``).

    Shapes:
        * input ``[N_b, in_ch, H, W]``, ``in_ch`` and ``out_ch`` divisible by ``p``
        * ``conv_kxk.weight`` ``[out_ch, in_ch / p, k, k]`` (group conv, ``groups=p``, padding
          ``k // 2``, stride ``stride``); ``conv_kxk.bias`` ``[out_ch]`` if ``bias``
        * ``weight_1x1`` ``[out_ch, in_ch, 1, 1]`` with the buffer ``mask_1x1`` (same shape, 0 on
          each filter's ``K x K`` channels): only ``out_ch * (in_ch - in_ch / p)`` true parameters
        * output ``[N_b, out_ch, ceil(H / stride), ceil(W / stride)]``

    ``layout="paper"`` puts filter ``n``'s ``K x K`` kernels on channels ``c = n (mod p)`` (the
    paper's shifted arrangement), ``layout="block"`` on block ``n // (out_ch/p)`` (module docstring).
    ``p = 1`` is a standard ``K x K`` conv; ``p = in_ch`` puts one ``K x K`` kernel per filter.
    Odd kernel sizes only. :meth:`to_dense_weight` returns the equivalent ``[out_ch, in_ch, k, k]``.
    """

    kind = "hetconv"

    def macs(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, int]:
        k, c = self.kernel_size, x.shape[1]
        return {
            "kxk_group": conv_macs(y.shape, c // self.p, (k, k)),
            "pointwise_masked": conv_macs(y.shape, c, (1, 1)),
        }

    def inactive_parameters(self) -> int:
        """The masked (always zero) entries of the 1x1 weight: parameters, but not counted."""
        return self.weight_1x1.numel() - int(self.mask_1x1.sum().item())

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        p: int = 4,
        stride: IntPair = 1,
        bias: bool = False,
        layout: str = "block",
    ) -> None:
        super().__init__()
        self.in_ch = check_positive("in_ch", in_ch)
        self.out_ch = check_positive("out_ch", out_ch)
        self.p = check_positive("p", p)
        check_divisible("in_ch", in_ch, "p", p)
        check_divisible("out_ch", out_ch, "p", p)
        k = check_positive("kernel_size", kernel_size)
        check_odd_kernel("kernel_size", (k, k))
        self.kernel_size = k
        self.stride = check_pair_positive("stride", stride)
        if layout not in _LAYOUTS:
            raise ValueError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
        self.layout = layout
        self.conv_kxk = nn.Conv2d(in_ch, out_ch, k, stride=self.stride, padding=k // 2, groups=p, bias=bias)
        self.weight_1x1 = nn.Parameter(torch.empty(out_ch, in_ch, 1, 1))
        o = torch.arange(out_ch)[:, None]
        c = torch.arange(in_ch)[None, :]
        if layout == "block":
            kxk = (c // (in_ch // p)) == (o // (out_ch // p))
        else:
            kxk = (c % p) == (o % p)
        self.register_buffer("mask_1x1", (~kxk).to(torch.float32)[:, :, None, None].contiguous())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``conv_kxk`` as ``nn.Conv2d``; ``weight_1x1`` Kaiming-uniform over its true fan-in, masked."""
        self.conv_kxk.reset_parameters()
        fan_in = self.in_ch - self.in_ch // self.p
        bound = 1.0 / math.sqrt(max(fan_in, 1))  # = kaiming_uniform(a=sqrt(5)) bound
        with torch.no_grad():
            nn.init.uniform_(self.weight_1x1, -bound, bound)
            self.weight_1x1.mul_(self.mask_1x1)

    def num_parameters(self) -> int:
        """True parameter count ``N*(C/P)*K*K + N*(C - C/P)`` (+ ``N`` bias)."""
        n = self.conv_kxk.weight.numel() + int(self.mask_1x1.sum().item())
        if self.conv_kxk.bias is not None:
            n += self.conv_kxk.bias.numel()
        return n

    def _kxk_index(self):
        """(filter, channel) index tensors ``[N, C/P]`` where ``conv_kxk.weight[r, t]`` lands."""
        p, cpg, npg = self.p, self.in_ch // self.p, self.out_ch // self.p
        r = torch.arange(self.out_ch)[:, None]  # group-conv filter: group g = r // npg, i = r % npg
        t = torch.arange(cpg)[None, :]  # channel inside the group
        g, i = r // npg, r % npg
        if self.layout == "block":
            return r.expand(-1, cpg), g * cpg + t
        return (i * p + g).expand(-1, cpg), t * p + g

    def to_dense_weight(self) -> torch.Tensor:
        """Equivalent dense ``[out_ch, in_ch, k, k]`` weight (same output order as ``forward``)."""
        k = self.kernel_size
        w1 = self.weight_1x1.detach()
        dense = torch.zeros(self.out_ch, self.in_ch, k, k, dtype=w1.dtype, device=w1.device)
        rows, cols = self._kxk_index()
        dense[rows, cols] = self.conv_kxk.weight.detach()
        dense[:, :, k // 2, k // 2] += (w1 * self.mask_1x1)[:, :, 0, 0]
        return dense

    def to_dense_bias(self) -> Optional[torch.Tensor]:
        """Bias in ``forward`` output order, or ``None``."""
        b = self.conv_kxk.bias
        if b is None:
            return None
        rows, _ = self._kxk_index()
        out = torch.empty_like(b.detach())
        out[rows[:, 0]] = b.detach()
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_ch, type(self).__name__)
        paper = self.layout == "paper" and self.p > 1
        cpg, npg = self.in_ch // self.p, self.out_ch // self.p
        # "paper": group the input channels by residue mod P, interleave the outputs back
        # (each shuffle is skipped when it is the identity permutation)
        yk = self.conv_kxk(ecf.channel_shuffle(x, cpg) if paper and cpg > 1 else x)
        if paper and npg > 1:
            yk = ecf.channel_shuffle(yk, self.p)
        return yk + F.conv2d(x, self.weight_1x1 * self.mask_1x1, None, self.stride)

    def extra_repr(self) -> str:
        return (
            f"{self.in_ch}, {self.out_ch}, kernel_size={self.kernel_size}, p={self.p}, "
            f"stride={self.stride}, bias={self.conv_kxk.bias is not None}, layout={self.layout!r}"
        )
