"""Channel shuffle and shuffled group convolution (Zhang et al., "ShuffleNet", CVPR 2018).

A group convolution followed by a channel shuffle
(``[B, G, C/G, H, W] -> transpose(1, 2) -> [B, C, H, W]``) lets the next group convolution mix
information across groups (``docs/conv-kinds.md`` section 3).
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from ..kinds import conv_macs, layer_kind
from .. import functional as ecf
from .._validate import IntPair, check_input, check_positive
from .group_conv import GroupConv2d

__all__ = ["ChannelShuffle", "ShuffledGroupConv2d"]


@layer_kind
class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle with ``groups`` groups (no parameters).

    Shapes: input ``[N, C, H, W]`` (``C`` divisible by ``groups``) -> output ``[N, C, H, W]``
    where output channel ``i * groups + g`` is input channel ``g * (C / groups) + i``.
    Exports as Reshape/Transpose/Reshape (dynamic batch supported).
    """

    kind = "shuffle"

    def macs(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, int]:
        return {"shuffle": 0}

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = check_positive("groups", groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(
                f"ChannelShuffle: input must be a 4-D tensor [N, C, H, W], got shape {tuple(x.shape)}"
            )
        if x.shape[1] % self.groups != 0:
            raise ValueError(
                f"ChannelShuffle: input channels ({x.shape[1]}) must be divisible by groups "
                f"({self.groups})"
            )
        return ecf.channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


@layer_kind
class ShuffledGroupConv2d(nn.Module):
    """Group convolution (``groups`` groups, "same" padding ``k // 2``) then channel shuffle.

    Shapes:
        * input  ``[N, in_ch, H, W]``
        * ``conv.weight`` ``[out_ch, in_ch / groups, k, k]``; ``conv.bias`` ``[out_ch]``
        * output ``[N, out_ch, ceil(H / stride), ceil(W / stride)]``, shuffled with ``groups``.

    Odd kernel sizes only ("same" padding).
    """

    kind = "shuffled_group"

    def macs(self, x: torch.Tensor, y: torch.Tensor) -> Dict[str, int]:
        return {"conv": conv_macs(y.shape, x.shape[1] // self.groups, self.conv.kernel_size), "shuffle": 0}

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: IntPair,
        groups: int,
        stride: IntPair = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.conv = GroupConv2d(in_ch, out_ch, kernel_size, groups, stride=stride, padding=None, bias=bias)
        self.shuffle = ChannelShuffle(groups)
        self.in_ch, self.out_ch, self.groups = in_ch, out_ch, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_ch, type(self).__name__)
        return self.shuffle(self.conv(x))
