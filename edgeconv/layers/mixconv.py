"""MixConv: mixed depthwise kernel sizes (Tan & Le, "MixConv: Mixed Depthwise Convolutional
Kernels", BMVC 2019, arXiv:1907.09595).

The channels are split into groups; each group gets a depthwise kernel of a different size and
the results are concatenated: a drop-in replacement for a depthwise conv
(``docs/conv-kinds.md`` section 3).
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

import torch
from torch import nn

from ..kinds import layer_kind
from .._validate import IntPair, check_input, check_pair_positive, check_positive, check_odd_kernel

__all__ = ["MixConv2d", "split_channels"]

_SPLITS = ("equal", "exponential")


def split_channels(channels: int, num_groups: int, split: str = "equal") -> List[int]:
    """Channel counts per kernel group, as in the MixNet reference code ``_split_channels``.

    * ``"equal"``: ``channels // num_groups`` each, the remainder added to the first group.
    * ``"exponential"``: ``channels // 2, channels // 4, ..., channels // 2**num_groups``, the
      remainder added to the first group (so the smallest kernel gets the most channels).

    Raises ``ValueError`` if a group would be empty.
    """
    check_positive("channels", channels)
    check_positive("num_groups", num_groups)
    if split == "equal":
        sizes = [channels // num_groups] * num_groups
    elif split == "exponential":
        sizes = [channels // 2 ** (i + 1) for i in range(num_groups)]
    else:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    sizes[0] += channels - sum(sizes)
    if min(sizes) <= 0:
        raise ValueError(
            f"channels ({channels}) too small for {num_groups} kernel groups with split={split!r}: "
            f"got group sizes {sizes}; expected every group > 0"
        )
    return sizes


@layer_kind
class MixConv2d(nn.Module):
    """Mixed-kernel depthwise convolution ("same" padding, channel-preserving).

    Shapes:
        * input  ``[N, channels, H, W]``
        * ``convs[i].weight`` ``[c_i, 1, k_i, k_i]`` with ``c_i = splits[i]`` and
          ``k_i = kernel_sizes[i]``; ``convs[i].bias`` ``[c_i]``
        * output ``[N, channels, ceil(H / stride), ceil(W / stride)]``: channels
          ``[sum(c_<i), sum(c_<=i))`` come from kernel ``k_i``.
    """

    kind = "mixconv"

    def macs(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, int]:
        b, spatial = x.shape[0], math.prod(y.shape[2:])
        return {f"depthwise_{k}x{k}": b * spatial * ci * k * k for ci, k in zip(self.splits, self.kernel_sizes)}

    def __init__(
        self,
        channels: int,
        kernel_sizes: Sequence[int] = (3, 5, 7),
        split: str = "equal",
        stride: IntPair = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        check_positive("channels", channels)
        if isinstance(kernel_sizes, int):
            kernel_sizes = (kernel_sizes,)
        kernel_sizes = tuple(kernel_sizes)
        if not kernel_sizes:
            raise ValueError("kernel_sizes must be a non-empty sequence of odd ints, got ()")
        for k in kernel_sizes:
            check_positive("kernel_sizes[i]", k)
            check_odd_kernel("kernel_sizes[i]", (k, k))
        s = check_pair_positive("stride", stride)
        self.channels, self.kernel_sizes, self.split = channels, kernel_sizes, split
        self.splits = split_channels(channels, len(kernel_sizes), split)
        self.convs = nn.ModuleList(
            nn.Conv2d(c, c, k, stride=s, padding=k // 2, groups=c, bias=bias)
            for c, k in zip(self.splits, kernel_sizes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, type(self).__name__)
        if len(self.convs) == 1:
            return self.convs[0](x)
        parts = torch.split(x, self.splits, dim=1)
        return torch.cat([conv(part) for conv, part in zip(self.convs, parts)], dim=1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_sizes={self.kernel_sizes}, splits={self.splits}"
