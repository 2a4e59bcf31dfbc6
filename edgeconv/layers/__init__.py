"""Convolution layers of every kind in ``docs/conv-kinds.md``, one family per module.

All are ``nn.Module``s taking and returning ``[N, C, H, W]`` tensors. Plain kinds use
``nn.Conv2d``/``F.conv2d`` (one standard ONNX ``Conv`` each); deformable and dynamic convolution
use :mod:`edgeconv.functional` custom ops (one node each under ``torch.export``).
"""

from .deform import DeformConv2d, ModulatedDeformConv2d
from .depthwise import DepthwiseConv2d, GlobalDepthwiseConv2d
from .dilated import DilatedConv2d
from .dynamic import DynamicConv2d
from .factory import CONV_KINDS, create_conv2d
from .flattened import FlattenedConv2d
from .group_conv import GroupConv2d
from .hetconv import HetConv2d
from .mixconv import MixConv2d, split_channels
from .separable import DepthwiseSeparableConv2d
from .shuffle import ChannelShuffle, ShuffledGroupConv2d
from .spatially_separable import SpatiallySeparableConv2d
from .true_conv import TrueConv2d

__all__ = [
    "TrueConv2d",
    "GroupConv2d",
    "DepthwiseConv2d",
    "GlobalDepthwiseConv2d",
    "ChannelShuffle",
    "ShuffledGroupConv2d",
    "DepthwiseSeparableConv2d",
    "MixConv2d",
    "split_channels",
    "DilatedConv2d",
    "DeformConv2d",
    "ModulatedDeformConv2d",
    "SpatiallySeparableConv2d",
    "FlattenedConv2d",
    "HetConv2d",
    "DynamicConv2d",
    "create_conv2d",
    "CONV_KINDS",
]
